"""Orbax checkpoints: the only module that talks to Orbax.

A checkpoint at step s holds three items:
  state   the whole TrainState (params, EMA, optimiser state, step), sharded arrays,
  config  the run's config as JSON (to refuse resuming with a different config),
  meta    small JSON facts: images_seen, train_seconds, the data position.
Orbax writes each checkpoint into a temporary directory and renames it when complete,
so a checkpoint directory either holds a whole checkpoint or is ignored. No pickle.
"""
from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Saves when asked (the training loop decides when) and keeps the `max_to_keep` newest."""

  def __init__(self, directory: str, max_to_keep: int = 3):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=("state", "config", "meta"))

  def latest_step(self) -> int | None:
    """The newest complete checkpoint's step, or None."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state, config: dict, meta: dict) -> bool:
    """Starts an asynchronous save of checkpoint `step`; returns whether one was started."""
    args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                              config=ocp.args.JsonSave(config), meta=ocp.args.JsonSave(meta))
    return self._manager.save(step, args=args, force=True)

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

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def abstract_with_shardings(abstract_tree, shardings):
  """Attaches shardings to a tree of ShapeDtypeStruct (e.g. from jax.eval_shape)."""
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract_tree, shardings)
