"""Multi-host start-up: one guarded `jax.distributed.initialize()`.

* Explicit: `coordinator_address` ("host:port"), `num_processes` and `process_id`
  (as given to launch.py by --coordinator_address/--num_processes/--process_id).
* Automatic: on Cloud TPU pods and under SLURM with more than one task, JAX detects
  the cluster itself; `JAX_COORDINATOR_ADDRESS` in the environment also triggers it.
* Otherwise: a single process, nothing to do.
Must run before any other JAX call. On CPU the cross-process collectives use gloo.
"""
from __future__ import annotations

import os

import jax


def _cluster_detected() -> bool:
  env = os.environ
  if env.get("JAX_COORDINATOR_ADDRESS"):
    return True
  if int(env.get("SLURM_NTASKS", "1") or 1) > 1 and env.get("SLURM_JOB_ID"):
    return True
  # Cloud TPU pod slices: more than one worker host.
  return len([h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
  """Initialises JAX's distributed runtime when needed; returns whether it is multi-process.

  Safe to call more than once. Raises ValueError (one line) on an incomplete explicit set.
  """
  if jax.distributed.is_initialized():
    return jax.process_count() > 1
  explicit = [coordinator_address, num_processes, process_id]
  if any(v is not None for v in explicit):
    if any(v is None for v in explicit):
      raise ValueError("multi-host needs all of --coordinator_address, --num_processes and "
                       "--process_id (or none of them, for auto-detection)")
    if not 0 <= process_id < num_processes:
      raise ValueError(f"--process_id {process_id} must be in [0, {num_processes})")
    if num_processes == 1:
      return False
  elif not _cluster_detected():
    return False
  if os.environ.get("JAX_PLATFORMS", "").startswith("cpu") or not _has_accelerator_plugin():
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)
  return jax.process_count() > 1


def _has_accelerator_plugin() -> bool:
  """Whether a GPU/TPU backend is installed (without initialising any backend)."""
  import importlib.util
  return any(importlib.util.find_spec(m) is not None
             for m in ("jax_cuda12_plugin", "jax_cuda13_plugin", "libtpu", "jax_plugins.xla_cuda12"))
