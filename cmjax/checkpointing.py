"""Orbax checkpoints: the only module that talks to Orbax.

A checkpoint at step s holds three items:
  state   the whole TrainState (params, EMA, optimiser state, step), sharded arrays,
  config  the run's config as JSON (to refuse resuming with a different config),
  meta    small JSON facts: images_seen, train_seconds, the data position.
Orbax writes each checkpoint into a temporary directory and renames it when complete,
so a checkpoint directory either holds a whole checkpoint or is ignored. No pickle.
"""
from __future__ import annotations

import contextlib
import os
import sys

import jax
import orbax.checkpoint as ocp


from cmjax.errors import CheckpointSaveError  # noqa: F401 - re-exported


class Checkpointer:
  """Saves when asked (the training loop decides when) and keeps the `max_to_keep` newest."""

  def __init__(self, directory: str, max_to_keep: int = 3):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=("state", "config", "meta"))
    self._pending: int | None = None  # step of the save in flight
    self._failed_reported = False

  def latest_step(self) -> int | None:
    """The newest complete checkpoint's step, or None."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state, config: dict, meta: dict) -> bool:
    """Starts an asynchronous save of checkpoint `step`; returns whether one was started."""
    args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                              config=ocp.args.JsonSave(config), meta=ocp.args.JsonSave(meta))
    self.wait()  # surfaces a failure of the previous asynchronous save under its own step
    with self._save_errors(step):
      started = self._manager.save(step, args=args, force=True)
    self._pending = step
    return started

  def read_config(self, step: int) -> dict:
    """The config stored with checkpoint `step`, as a dict (nothing else is read)."""
    out = self._manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    return out["config"]

  def restore(self, step: int, abstract_state) -> tuple:
    """Restores (state, meta) at `step` into `abstract_state`'s shapes, dtypes and shardings.

    abstract_state: a pytree of jax.ShapeDtypeStruct with `.sharding` set (see
    `abstract_with_shardings`), so arrays come back already placed on the mesh.
    """
    args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                              meta=ocp.args.JsonRestore())
    out = self._manager.restore(step, args=args)
    return out["state"], out["meta"]

  def restore_newest(self, abstract_state, check_config=None):
    """Restores the newest checkpoint that reads back whole; returns (step, state, meta) or None.

    A checkpoint that cannot be read (truncated file, missing item) is set aside with a
    warning naming it, and the next older one is tried; nothing is deleted.
    `check_config(saved_config_dict)` may raise to refuse a checkpoint outright (that
    error propagates: a different config is not a corrupt checkpoint).
    """
    for step in sorted(self.all_steps(), reverse=True):
      try:
        saved = self.read_config(step)
      except Exception as e:  # noqa: BLE001 - any read failure means "unusable"
        self._set_aside(step, e)
        continue
      if check_config is not None:
        check_config(saved)
      try:
        state, meta = self.restore(step, abstract_state)
      except Exception as e:  # noqa: BLE001
        self._set_aside(step, e)
        continue
      return step, state, meta
    return None

  def _set_aside(self, step: int, error: Exception) -> None:
    """Renames an unreadable checkpoint to '<step>.unreadable' (kept for inspection, not
    deleted), so training can write that step again."""
    src = os.path.join(self.directory, str(step))
    dst = f"{src}.unreadable"
    n = 1
    while os.path.exists(dst):
      n += 1
      dst = f"{src}.unreadable{n}"
    msg = " ".join(str(error).split())[:200]
    print(f"cmjax: warning: checkpoint {step} in {self.directory} cannot be restored "
          f"({type(error).__name__}: {msg}); moved it to {os.path.basename(dst)} and trying "
          f"an older one", file=sys.stderr)
    if jax.process_index() == 0 and os.path.isdir(src):
      os.rename(src, dst)
    self._manager.reload()

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are on disk (CheckpointSaveError if one failed)."""
    with self._save_errors(self._pending):
      self._manager.wait_until_finished()

  def close(self) -> None:
    try:
      self.wait()
    except CheckpointSaveError:
      if not self._failed_reported:
        raise
    finally:
      self._manager.close()

  @contextlib.contextmanager
  def _save_errors(self, step):
    """Turns any failure while writing into one CheckpointSaveError naming what is kept."""
    try:
      yield
    except Exception as e:  # noqa: BLE001 - OSError, tensorstore and Orbax errors alike
      self._failed_reported = True
      root = e
      while root.__cause__ is not None or root.__context__ is not None:
        root = root.__cause__ or root.__context__
      full = " ".join(str(root).split())
      msg = full[-300:]
      if getattr(root, "errno", None) == 28 or "No space left" in full or "os_error_code='28'" in full:
        msg = "disk full (ENOSPC): " + msg
      kept = [s for s in self._complete_steps() if s != step]
      raise CheckpointSaveError(
          f"writing checkpoint {step} to {self.directory} failed ({type(root).__name__}: {msg}); "
          f"the checkpoints already there are kept: {kept}") from e

  def _complete_steps(self) -> list[int]:
    """Steps whose directories Orbax marked complete (read from disk, not from the cache)."""
    try:
      self._manager.reload()
      return sorted(self._manager.all_steps())
    except Exception:  # noqa: BLE001
      return []


def abstract_with_shardings(abstract_tree, shardings):
  """Attaches shardings to a tree of ShapeDtypeStruct (e.g. from jax.eval_shape)."""
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract_tree, shardings)

