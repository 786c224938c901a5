"""Orbax checkpoints: the only module that talks to Orbax.

A checkpoint at step s holds four items:
  state      the whole TrainState (params, EMA, optimiser state, step), sharded arrays,
  config     the run's config as JSON (to refuse resuming with a different config),
  meta       small JSON facts: images_seen, train_seconds, the data position,
  checksums  JSON: the CRC-32 of every array of `state` as saved (see `state_checksums`).
Orbax writes each checkpoint into a temporary directory and renames it when complete,
so a checkpoint directory either holds a whole checkpoint or is ignored. No pickle.

What a restore guarantees (`Checkpointer.restore`): the saved tree has the target's structure
and shapes (else CheckpointMismatchError: one line, nothing on disk changes); every array has the
CRC-32 recorded at save time and every float is finite (else CheckpointCorruptError). A
checkpoint written before checksums existed restores with one warning. `restore_newest` sets an
unreadable or corrupt checkpoint aside as `<step>.unreadable` and tries the next older one.

Checksums on several hosts: a leaf replicated on every device (params, EMA, optimiser state under
the data-parallel mesh) is checked whole by every process; a leaf sharded across hosts (FSDP) has
no host holding it whole, so its checksum is recorded as null and only its finiteness is checked
(each process checks its own shards).

A failed save (disk full, the directory is a file, no permission) raises CheckpointSaveError and
cancels Orbax's background threads of that save (they are not daemon threads and would otherwise
wait up to Orbax's 300 s coordination timeout before the process could exit).
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
import zlib

import jax
import numpy as np
import orbax.checkpoint as ocp

from cmjax.errors import (CheckpointCorruptError, CheckpointMismatchError,  # noqa: F401
                          CheckpointSaveError, NoReadableCheckpointError)

CHECKSUM_FORMAT = "cmjax-crc32-v1"


def _key_name(k) -> str:
  """One path element (attribute, dict key, sequence index) as a string."""
  for attr in ("name", "key", "idx"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def _leaf_paths(tree) -> list[tuple[str, object]]:
  """[('params/Conv_0/kernel', leaf), ...] in tree order; Orbax's metadata tree (nested dicts)
  and the TrainState (dataclass, dicts, named tuples) give the same names."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return [("/".join(_key_name(k) for k in path), leaf) for path, leaf in flat]


def _host_parts(leaf) -> tuple[np.ndarray | None, list[np.ndarray]]:
  """(the whole array on the host or None, the host arrays to check for finiteness)."""
  if isinstance(leaf, jax.Array):
    if leaf.is_fully_replicated:
      whole = np.asarray(leaf.addressable_data(0))
    elif leaf.is_fully_addressable:
      whole = np.asarray(leaf)
    else:  # sharded across hosts: only this process's shards are here
      return None, [np.asarray(s.data) for s in leaf.addressable_shards]
    return whole, [whole]
  whole = np.asarray(leaf)
  return whole, [whole]


def _crc32(a: np.ndarray) -> int:
  """CRC-32 of an array's bytes in C order (any dtype, bfloat16 and 0-d included)."""
  return zlib.crc32(np.ascontiguousarray(a).reshape(-1).view(np.uint8))


def state_checksums(state) -> dict:
  """{'format': ..., 'leaves': {path: {'crc32', 'shape', 'dtype'} or None}} of a pytree of arrays.

  Computed from the host copy of each array (see the module docstring for several hosts).
  """
  leaves = {}
  for name, leaf in _leaf_paths(state):
    whole, _ = _host_parts(leaf)
    leaves[name] = None if whole is None else {
        "crc32": _crc32(whole), "shape": list(whole.shape), "dtype": str(whole.dtype)}
  return {"format": CHECKSUM_FORMAT, "leaves": leaves}


def verify_state(state, checksums: dict | None, what: str) -> None:
  """Raises CheckpointCorruptError (one line, naming the first bad leaf) when a float leaf of
  `state` is not finite or a leaf's CRC-32 differs from `checksums` (from `state_checksums`; None:
  finiteness only). A leaf restored into another dtype than it was saved in is not CRC-checked."""
  recorded = (checksums or {}).get("leaves", {})
  if checksums is not None and checksums.get("format") != CHECKSUM_FORMAT:
    raise CheckpointCorruptError(f"{what}: unknown checksum format {checksums.get('format')!r}")
  for name, leaf in _leaf_paths(state):
    whole, parts = _host_parts(leaf)
    for p in parts:
      if jax.numpy.issubdtype(p.dtype, np.inexact) and not np.isfinite(
          p.astype(np.float32) if p.dtype.itemsize < 4 else p).all():
        raise CheckpointCorruptError(f"{what}: array {name} holds non-finite values")
    rec = recorded.get(name)
    if whole is None or rec is None or rec.get("dtype") != str(whole.dtype):
      continue
    if list(whole.shape) != list(rec["shape"]) or _crc32(whole) != rec["crc32"]:
      raise CheckpointCorruptError(f"{what}: array {name} does not match the checksum written "
                                   f"with it (the file was changed or damaged on disk)")


def check_same_structure(saved: dict, abstract_state, what: str) -> None:
  """Raises CheckpointMismatchError naming the first leaf whose path or shape differs between
  `saved` ({path: shape tuple}, from `Checkpointer.saved_tree`) and `abstract_state`."""
  expected = {name: tuple(leaf.shape) for name, leaf in _leaf_paths(abstract_state)}
  for name in sorted(set(saved) | set(expected)):
    if saved.get(name) != expected.get(name):
      got, want = saved.get(name, "absent"), expected.get(name, "absent")
      raise CheckpointMismatchError(
          f"{what} does not fit this run: array {name} was saved with shape {got} but this run "
          f"expects {want} (a changed backbone or teacher?); nothing was changed on disk")


def abort_background_saves() -> int:
  """Cancels Orbax's background save threads that are still alive and wakes the ones waiting
  for a signal of a step that failed (so the process can exit); returns how many it cancelled.

  Relies on Orbax's `_SignalingThread` (orbax-checkpoint 0.11-0.12): `cancel()` marks it, and
  setting the signals it waits on lets it see the mark and return at once."""
  import warnings

  from orbax.checkpoint._src.futures import future as ofuture

  # The cancelled save's coroutines are dropped on purpose: no 'never awaited' noise at exit.
  warnings.filterwarnings("ignore", message="coroutine .* was never awaited",
                          category=RuntimeWarning)
  n = 0
  for t in threading.enumerate():
    if isinstance(t, ofuture._SignalingThread) and t.is_alive():  # noqa: SLF001
      t.cancel()
      try:
        ofuture.set_signals(t._receive_signals, operation_id=t._operation_id)  # noqa: SLF001
      except Exception:  # noqa: BLE001 - best effort: the thread then ends at its timeout
        pass
      n += 1
  for t in threading.enumerate():
    if isinstance(t, ofuture._SignalingThread):  # noqa: SLF001
      threading.Thread.join(t, timeout=5.0)  # not its own join(), which raises CancelledError
  return n


_CPU_ARRAY_HANDLER_SET = False


def _save_whole_shards_on_cpu() -> None:
  """On CPU-only JAX, Orbax saves each array from one replica (not replica-parallel).

  Orbax's default on CPU and TPU splits every replicated array into one slice per replica and
  copies the slices "in parallel", which costs one small compiled slicing op per array shape: on
  8 simulated CPU devices that made each save of a tiny model take seconds. On CPU there is no
  device-to-host copy to parallelise, so this only removes work. (Orbax already does this on
  GPU.) The files written are the same either way. TPU and GPU keep Orbax's default.
  """
  global _CPU_ARRAY_HANDLER_SET
  if _CPU_ARRAY_HANDLER_SET or jax.default_backend() != "cpu":
    return
  from orbax.checkpoint._src.serialization import jax_array_handlers  # noqa: PLC0415
  ocp.type_handlers.register_type_handler(
      jax.Array, jax_array_handlers.ArrayHandler(use_replica_parallel=False), override=True)
  _CPU_ARRAY_HANDLER_SET = True


class Checkpointer:
  """Saves when asked (the training loop decides when) and keeps the `max_to_keep` newest."""

  def __init__(self, directory: str, max_to_keep: int = 3):
    self.directory = os.path.abspath(directory)
    _save_whole_shards_on_cpu()
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    handlers = {"state": ocp.StandardCheckpointHandler(), "config": ocp.JsonCheckpointHandler(),
                "meta": ocp.JsonCheckpointHandler(), "checksums": ocp.JsonCheckpointHandler()}
    try:
      self._manager = ocp.CheckpointManager(self.directory, options=options,
                                            item_handlers=handlers)
    except OSError as e:  # e.g. a path under a regular file
      raise CheckpointSaveError(f"cannot use {self.directory} for checkpoints "
                                f"({type(e).__name__}: {' '.join(str(e).split())})") from e
    self._pending: int | None = None  # step of the save in flight
    self._failed_reported = False
    self._warned_unverified = False
    self._state_trees = {}  # step -> the saved state's metadata tree (Orbax reads it in ~0.5 s)

  def latest_step(self) -> int | None:
    """The newest complete checkpoint's step, or None."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state, config: dict, meta: dict) -> bool:
    """Starts an asynchronous save of checkpoint `step` (with the CRC-32 of every array of
    `state`, computed here before the save starts); returns whether one was started."""
    self.wait()  # surfaces a failure of the previous asynchronous save under its own step
    self._state_trees.pop(step, None)
    args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                              config=ocp.args.JsonSave(config), meta=ocp.args.JsonSave(meta),
                              checksums=ocp.args.JsonSave(state_checksums(state)))
    with self._save_errors(step):
      started = self._manager.save(step, args=args, force=True)
    self._pending = step
    return started

  def read_config(self, step: int) -> dict:
    """The config stored with checkpoint `step`, as a dict (nothing else is read)."""
    out = self._manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    return out["config"]

  def saved_tree(self, step: int) -> dict:
    """{'params/Conv_0/kernel': shape, ...} of the state saved in checkpoint `step`, read from
    its metadata without reading any array."""
    tree = self._state_tree(step)
    return {name: tuple(m.shape) for name, m in _leaf_paths(tree)}

  def saved_shapes(self, step: int, field: str):
    """The shapes and dtypes of `field` (a TrainState field, e.g. 'teacher_params') as saved in
    checkpoint `step`: a tree of jax.ShapeDtypeStruct (None if nothing was saved there), read
    from the checkpoint's metadata without reading its arrays."""
    tree = self._state_tree(step)[field]
    return jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype), tree)

  def _state_tree(self, step: int):
    """The metadata tree of the state saved at `step`, read once per step and Checkpointer."""
    if step not in self._state_trees:
      self._state_trees[step] = self._manager.item_metadata(step)["state"].tree
    return self._state_trees[step]

  def restore(self, step: int, abstract_state) -> tuple:
    """Restores (state, meta) at `step` into `abstract_state`'s shapes, dtypes and shardings.

    abstract_state: a pytree of jax.ShapeDtypeStruct with `.sharding` set (see
    `abstract_with_shardings`), so arrays come back already placed on the mesh.
    Raises CheckpointMismatchError (another structure or shape; read from the metadata before
    any array) or CheckpointCorruptError (a checksum differs, a float is not finite).
    """
    return self._restore(step, abstract_state)

  def restore_fields(self, step: int, abstract_fields: dict) -> tuple:
    """Reads only some TrainState fields of checkpoint `step`: (fields, meta).

    abstract_fields: {field: tree of jax.ShapeDtypeStruct with `.sharding`}, e.g.
    {'ema_params': ...}. The rest (the other parameter copy, the optimiser moments, a teacher) is
    not read: sampling costs one copy of the parameters (Orbax's partial restore). What is read
    gets `restore`'s checks (CheckpointMismatchError, CheckpointCorruptError).
    """
    def read():
      args = ocp.args.PyTreeRestore(
          item=abstract_fields, partial_restore=True,
          restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_fields))
      with ocp.PyTreeCheckpointer() as reader:
        return reader.restore(os.path.join(self.directory, str(step), "state"), args=args)
    return self._restore(step, abstract_fields, read, set(abstract_fields))

  def _restore(self, step: int, abstract, read_part=None, fields=None) -> tuple:
    """(state, meta) of `restore`, or with `read_part` (a callable reading only the top-level
    `fields` of the state) those fields: structure check, read, checksums, finiteness."""
    what = f"checkpoint {step} in {self.directory}"
    try:
      saved = self.saved_tree(step)
    except Exception:  # noqa: BLE001 - unreadable metadata: the restore below decides
      saved = None
    if saved is not None:
      if fields is not None:
        saved = {k: v for k, v in saved.items() if k.split("/")[0] in fields}
      check_same_structure(saved, abstract, what)
    has_sums = os.path.isdir(os.path.join(self.directory, str(step), "checksums"))
    items = {"meta": ocp.args.JsonRestore()}
    if read_part is None:
      items["state"] = ocp.args.StandardRestore(abstract)
    if has_sums:
      items["checksums"] = ocp.args.JsonRestore()
    out = self._manager.restore(step, args=ocp.args.Composite(**items))
    state = out["state"] if read_part is None else read_part()
    if not has_sums and not self._warned_unverified:
      self._warned_unverified = True
      print(f"cmjax: warning: {what} has no checksums (written by an older cmjax); its arrays "
            f"are checked for non-finite values only", file=sys.stderr)
    verify_state(state, out["checksums"] if has_sums else None, what)
    return state, out["meta"]

  def restore_newest(self, abstract_state, check_config=None, fields_only: bool = False):
    """Restores the newest checkpoint that reads back whole; returns (step, state, meta), or None
    when there is no checkpoint at all.

    A checkpoint that cannot be read (truncated file, missing item, checksum mismatch,
    non-finite values) is set aside as '<step>.unreadable' with a warning naming it, and the
    next older one is tried; nothing is deleted. When none is left, NoReadableCheckpointError
    (one line) — never a silent start from step 0.
    `check_config(saved_config_dict)` may raise to refuse a checkpoint outright, and a
    checkpoint of another structure or shapes raises CheckpointMismatchError: both propagate
    with nothing on disk changed (a different config is not a corrupt checkpoint).
    fields_only: abstract_state is a dict {field: tree} of the fields to read (`restore_fields`),
    and the state returned is that dict.
    """
    read = self.restore_fields if fields_only else self.restore
    failed = []
    for step in sorted(self.all_steps(), reverse=True):
      try:
        saved = self.read_config(step)
      except Exception as e:  # noqa: BLE001 - any read failure means "unusable"
        failed.append(self._set_aside(step, e))
        continue
      if check_config is not None:
        check_config(saved)
      try:
        state, meta = read(step, abstract_state)
      except CheckpointMismatchError:
        raise
      except Exception as e:  # noqa: BLE001 - a read failure or CheckpointCorruptError
        failed.append(self._set_aside(step, e))
        continue
      return step, state, meta
    if failed:
      raise NoReadableCheckpointError(
          f"no checkpoint in {self.directory} can be restored ({'; '.join(failed)}); they are "
          f"kept as <step>.unreadable; rerunning the command starts this run from step 0")
    return None

  def _set_aside(self, step: int, error: Exception) -> str:
    """Renames an unreadable checkpoint to '<step>.unreadable' (kept for inspection, not
    deleted), so training can write that step again; returns 'step: why'."""
    self._state_trees.pop(step, None)
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
    return f"{step}: {type(error).__name__}"

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
      if self._failed_reported:  # the save threads were cancelled; closing would wait on them
        with contextlib.suppress(Exception):
          self._manager.close()
      else:
        self._manager.close()

  @contextlib.contextmanager
  def _save_errors(self, step):
    """Turns any failure while writing into one CheckpointSaveError naming what is kept, after
    cancelling the failed save's background threads (so the process can exit)."""
    try:
      yield
    except Exception as e:  # noqa: BLE001 - OSError, tensorstore and Orbax errors alike
      self._failed_reported = True
      abort_background_saves()
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
