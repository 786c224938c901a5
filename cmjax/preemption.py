"""Preemption: SIGTERM / SIGINT become a request to stop cleanly after the current step.

TPU pods and SLURM clusters send SIGTERM before taking a machine away. The training
loop asks `should_stop()` after every step; on a request it saves a checkpoint, waits
for it to be on disk and returns, so the process exits 0 and the next launch resumes.
A second signal of the same kind falls back to the default behaviour (stop now).
"""
from __future__ import annotations

import signal
import threading

import jax
from jax.experimental import multihost_utils
import numpy as np


class PreemptionGuard:
  """Context manager that records SIGTERM/SIGINT instead of dying (main thread only)."""

  def __init__(self, signals=(signal.SIGTERM, signal.SIGINT), check_every: int = 10):
    self.signals = tuple(signals)
    self.check_every = max(1, int(check_every))
    self.received: int | None = None
    self._previous = {}

  def _handle(self, signum, frame):
    if self.received == signum:  # asked twice: stop now
      signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
      signal.raise_signal(signum)
      return
    self.received = signum

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for s in self.signals:
        self._previous[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc):
    for s, h in self._previous.items():
      signal.signal(s, h)
    self._previous.clear()
    return False

  @property
  def signal_name(self) -> str:
    return signal.Signals(self.received).name if self.received is not None else ""

  def should_stop(self, step: int = 0) -> bool:
    """True once any process received a signal (all processes agree, so they stop together).

    One process: checked at every step, no collective. Several: the processes exchange their
    flags only at steps that are multiples of `check_every` (the same steps on every process, so
    they still agree), so the check costs one small all-gather every `check_every` steps, not
    one per step; a signal is acted on at most `check_every - 1` steps late."""
    local = self.received is not None
    if jax.process_count() == 1:
      return local
    if step % self.check_every:
      return False
    flags = multihost_utils.process_allgather(np.asarray([local]))
    return bool(np.any(flags))
