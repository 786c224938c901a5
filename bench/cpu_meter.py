"""CPU measurement helpers for the benchmarks: thread pinning, per-thread CPU time, step statistics
and a description of the machine (used by bench/side_by_side.py and bench/profile_ops.py)."""
from __future__ import annotations

import os
import platform
import statistics
import time


def pin_threads(n: int) -> list:
  """Pins this process to the first n CPUs it may use and sets XLA's flags for n threads.

  Must run before jax is imported (XLA reads XLA_FLAGS and sizes its thread pool from the CPU
  affinity when the backend starts). Returns the CPUs kept. torch's count is set by `torch_side`.
  """
  from cmjax.errors import ConfigError
  allowed = sorted(os.sched_getaffinity(0))
  if n < 1 or n > len(allowed):
    raise ConfigError(f"--threads must be in 1..{len(allowed)} (CPUs this process may use), got {n}")
  keep = allowed[:n]
  os.sched_setaffinity(0, keep)
  if n == 1 and "xla_cpu_multi_thread_eigen" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()
  for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(n)
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  return keep


def thread_ticks() -> dict:
  """CPU time (clock ticks, user + system) of each thread of this process: {tid: ticks}."""
  out = {}
  for tid in os.listdir("/proc/self/task"):
    try:
      with open(f"/proc/self/task/{tid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
      out[tid] = int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
      pass
  return out


class ThreadMeter:
  """Accumulates per-thread CPU time over the calls it wraps (to see how many threads work)."""

  def __init__(self):
    self.ticks, self.wall, self.calls = {}, 0.0, 0

  def time(self, fn):
    """Runs fn() and returns its wall seconds, adding each thread's CPU ticks meanwhile."""
    t0, w0 = thread_ticks(), time.perf_counter()
    fn()
    dt = time.perf_counter() - w0
    for tid, v in thread_ticks().items():
      self.ticks[tid] = self.ticks.get(tid, 0) + v - t0.get(tid, 0)
    self.wall += dt
    self.calls += 1
    return dt

  def summary(self) -> dict:
    """busy_threads (>= 25% of the busiest thread's CPU time), cpu_per_wall and cpu_ms per call
    (the process's CPU time per step: under load from other processes a steadier measure of
    the work than wall time, for 1 thread)."""
    vals = sorted((v for v in self.ticks.values() if v > 0), reverse=True)
    hz = os.sysconf("SC_CLK_TCK")
    busy = [v for v in vals if vals and v >= 0.25 * vals[0]]
    return {"busy_threads": len(busy),
            "cpu_ms": round(1000.0 * sum(vals) / hz / max(self.calls, 1), 1),
            "cpu_per_wall": round(sum(vals) / hz / max(self.wall, 1e-9), 2),
            "top_thread_cpu_s": [round(v / hz, 2) for v in vals[:4]]}


def stats_ms(seconds: list) -> dict:
  """{min, median, n} of step times given in seconds, as milliseconds."""
  ms = [1000.0 * s for s in seconds]
  return {"min_ms": round(min(ms), 2), "median_ms": round(statistics.median(ms), 2), "n": len(ms)}


def machine_info() -> dict:
  """CPU model, logical cores, cores this process may use, load average, platform."""
  model = platform.processor() or ""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          model = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  return {"cpu": model, "cores": os.cpu_count(), "affinity": sorted(os.sched_getaffinity(0)),
          "loadavg": list(os.getloadavg()), "platform": platform.platform()}
