"""Multi-host start-up: one guarded `jax.distributed.initialize()`.

* Explicit: `coordinator_address` ("host:port"), `num_processes` and `process_id`
  (as given to launch.py by --coordinator_address/--num_processes/--process_id).
* Automatic: wherever JAX's own cluster detection finds several processes (Cloud TPU VM pod
  slices through the TPU metadata server, GKE, SLURM, Open MPI's mpirun, Kubernetes), JAX sets
  the cluster up itself; `JAX_COORDINATOR_ADDRESS` in the environment also triggers it.
* Otherwise: a single process, nothing to do.
Must run before any other JAX call. On CPU the cross-process collectives use gloo.

Start-up waits at most `timeout` seconds for every process to join; a peer that never starts
ends in one line naming this process, whom it waited for (the coordinator at HOST:PORT and the
other processes) and the timeout — instead of five silent minutes and an abort. JAX's C++ client
aborts the process (SIGABRT, a C++ stack trace) when its own `initialization_timeout` passes, so
that is set `_GRACE_S` seconds later and a watchdog thread prints the line and exits with status 1
at `timeout`; an error JAX raises earlier (coordinator unreachable) becomes InitializationError.
"""
from __future__ import annotations

import os
import sys
import threading
import warnings

import jax


class InitializationError(RuntimeError):
  """The multi-host start-up failed (a peer never joined, the coordinator is unreachable)."""


_GRACE_S = 15  # JAX's own initialization_timeout is this much later than the watchdog's


def _cluster_detected() -> bool:
  """Whether this process is one of several in a cluster JAX can set up by itself."""
  env = os.environ
  if env.get("JAX_COORDINATOR_ADDRESS"):
    return True
  if int(env.get("SLURM_NTASKS", "1") or 1) > 1 and env.get("SLURM_JOB_ID"):
    return True
  # Cloud TPU pod slices that say so in the environment (GKE): more than one worker host.
  if len([h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1:
    return True
  return _jax_cluster() is not None


def _jax_cluster():
  """The multi-process cluster JAX's own detection finds, or None: plain Cloud TPU VM pod slices
  (through the TPU metadata server, not the environment), GKE TPU, SLURM, Open MPI (mpirun),
  Kubernetes jobs. JAX's detectors (`jax._src.clusters`, private: anything missing or raising
  counts as no cluster), skipping the opt-in ones (mpi4py) as `jax.distributed.initialize()`
  does, and a cluster of one process (a single-host TPU VM: nothing to initialise)."""
  try:
    from jax._src import clusters  # noqa: PLC0415 - private API, probed defensively
    kinds = list(clusters.ClusterEnv._cluster_types)
  except Exception:  # noqa: BLE001
    return None
  for kind in kinds:
    if getattr(kind, "opt_in_only_method", False):
      continue
    try:
      with warnings.catch_warnings():  # a probe says nothing (K8s without the kubernetes package)
        warnings.simplefilter("ignore")
        if kind.is_env_present() and int(kind.get_process_count()) > 1:
          return kind
    except Exception:  # noqa: BLE001 - a detector that cannot answer (no metadata server, ...)
      continue
  return None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, timeout: int = 300) -> bool:
  """Initialises JAX's distributed runtime when needed; returns whether it is multi-process.

  Safe to call more than once. Raises ValueError (one line) on an incomplete explicit set, and
  InitializationError (one line) when the processes do not all join within `timeout` seconds.
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
  if timeout < 1:
    raise ValueError(f"--init_timeout must be >= 1 second, got {timeout}")
  why = _waiting_for(coordinator_address, num_processes, process_id, timeout)
  done = threading.Event()

  def watchdog():
    if not done.wait(timeout):
      print(f"cmjax: error: {why}", file=sys.stderr, flush=True)
      os._exit(1)

  threading.Thread(target=watchdog, name="cmjax-init-watchdog", daemon=True).start()
  try:
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id,
                               initialization_timeout=int(timeout + _GRACE_S))
  except Exception as e:  # noqa: BLE001 - XlaRuntimeError (DEADLINE_EXCEEDED, UNAVAILABLE), ...
    detail = " ".join(str(e).split())[:200]
    raise InitializationError(f"{why} ({type(e).__name__}: {detail})") from None
  finally:
    done.set()
  return jax.process_count() > 1


def _waiting_for(address, num_processes, process_id, timeout) -> str:
  """The one line a failed start-up prints: who waited for whom, and for how long."""
  if address is None:  # auto-detected cluster
    return (f"multi-host start-up did not complete within {timeout} s (auto-detected cluster); "
            f"start the same command on every host, or raise --init_timeout")
  peers = f"the other {num_processes - 1} process(es)" if num_processes else "the other processes"
  who = ("waited as the coordinator" if process_id == 0 else
         f"waited for the coordinator (process 0) at {address}")
  return (f"process {process_id} of {num_processes} {who} and for {peers} for {timeout} s, but "
          f"not all of them joined; start the same command with --process_id 0..."
          f"{num_processes - 1} on every host (same --coordinator_address), or raise "
          f"--init_timeout")


def _has_accelerator_plugin() -> bool:
  """Whether a GPU/TPU backend is installed (without initialising any backend)."""
  import importlib.util

  def found(name: str) -> bool:
    try:  # a dotted name raises ModuleNotFoundError when its parent package is absent
      return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
      return False
  return any(found(m) for m in ("jax_cuda12_plugin", "jax_cuda13_plugin", "libtpu",
                                "jax_plugins.xla_cuda12"))
