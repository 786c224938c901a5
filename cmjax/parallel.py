"""Device mesh and shardings: jit over a 1-D 'data' mesh with NamedSharding."""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_data_mesh(devices=None) -> Mesh:
  """A 1-D mesh over all (or the given) devices with axis 'data'."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  """Sharding of arrays copied on every device (parameters, keys, metrics)."""
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding of arrays split along their leading (batch) axis over 'data'."""
  return NamedSharding(mesh, P(DATA_AXIS))


def global_batch(local: dict, mesh: Mesh) -> dict:
  """Assembles the global batch from this process's share (numpy arrays, leading axis)."""
  sh = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sh, v) for k, v in local.items()}


def fsdp_sharding(abstract_tree, mesh: Mesh, min_size: int = 2**12):
  """FSDP/ZeRO-3 layout: each array of >= min_size elements is split along its largest
  dimension divisible by the device count; smaller arrays (biases, norms, counters) and
  arrays with no such dimension stay replicated. Returns a tree of NamedSharding.

  Under jit, XLA then all-gathers parameters where they are used and reduce-scatters
  their gradients, so parameter and optimiser memory per device shrink by ~1/devices.
  """
  n = mesh.devices.size

  def rule(a):
    if a.size < min_size or n == 1:
      return replicated(mesh)
    dims = [d for d in sorted(range(a.ndim), key=lambda d: -a.shape[d]) if a.shape[d] % n == 0]
    if not dims:
      return replicated(mesh)
    spec = [None] * a.ndim
    spec[dims[0]] = DATA_AXIS
    return NamedSharding(mesh, P(*spec))

  return jax.tree.map(rule, abstract_tree)
