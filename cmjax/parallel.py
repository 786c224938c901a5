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


def check_batch_divisible(batch_size: int, mesh: Mesh, what: str = "batch size") -> None:
  """Raises ValueError naming the problem if batch_size is not divisible by the device count."""
  n = mesh.devices.size
  if batch_size % n:
    raise ValueError(f"{what} {batch_size} is not divisible by the number of devices ({n})")


def global_batch(local: dict, mesh: Mesh) -> dict:
  """Assembles the global batch from this process's share (numpy arrays, leading axis)."""
  sh = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sh, v) for k, v in local.items()}
