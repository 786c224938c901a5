"""Regenerates cmjax/assets/digits_classifier.npz deterministically.

Trains `DigitsClassifier` on the digits 'train' split only (fixed seed, fixed
minibatch order, Adam, random +-1 pixel shifts as augmentation, fixed number of
steps), prints train / held-out accuracy and writes the weights.

  python scripts/train_digits_classifier.py [--out PATH]
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from cmjax.data.digits import load_digits_split  # noqa: E402
from cmjax.evaluation.digits_classifier import (  # noqa: E402
    WEIGHTS_PATH, DigitsClassifier, save_classifier_params)

SEED = 0
STEPS = 1500
BATCH = 128
LR = 1e-3
WEIGHT_DECAY = 1e-4


def random_shift(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
  """Shifts each image by dy, dx in {-1, 0, 1}, filling with -1 (background)."""
  n = x.shape[0]
  dy, dx = rng.integers(-1, 2, size=(2, n))
  padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-1.0)
  rows = 1 + dy[:, None] + np.arange(8)[None]
  cols = 1 + dx[:, None] + np.arange(8)[None]
  return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default=str(WEIGHTS_PATH))
  args = parser.parse_args()

  x_train, y_train = load_digits_split("train", with_labels=True)
  x_held, y_held = load_digits_split("heldout", with_labels=True)
  model = DigitsClassifier()
  key = jax.random.PRNGKey(SEED)
  params = model.init(key, jnp.zeros((1, 8, 8, 1)))["params"]
  n_params = sum(p.size for p in jax.tree_util.tree_leaves(params))
  schedule = optax.cosine_decay_schedule(LR, STEPS)
  tx = optax.adamw(schedule, weight_decay=WEIGHT_DECAY)
  opt_state = tx.init(params)

  # Fixed minibatch order: a seeded permutation per epoch, precomputed.
  n = x_train.shape[0]
  rng = np.random.default_rng(SEED)
  per_epoch = n // BATCH
  epochs = -(-STEPS // per_epoch)
  order = np.concatenate([rng.permutation(n)[:per_epoch * BATCH] for _ in range(epochs)])
  order = order[:STEPS * BATCH].reshape(STEPS, BATCH)

  def loss_fn(p, x, y):
    logits = model.apply({"params": p}, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  @jax.jit
  def step(p, s, x, y):
    loss, g = jax.value_and_grad(loss_fn)(p, x, y)
    updates, s = tx.update(g, s, p)
    return optax.apply_updates(p, updates), s, loss

  # A Python loop over a jitted step: lax.scan over convs is far slower on XLA:CPU.
  t0 = time.time()
  losses = []
  for i in range(STEPS):
    idx = order[i]
    params, opt_state, loss = step(params, opt_state, random_shift(rng, x_train[idx]),
                                   y_train[idx])
    losses.append(loss)
  losses = np.asarray(jax.device_get(losses))
  print(f"trained {STEPS} steps in {time.time() - t0:.1f}s; params {n_params:,}; "
        f"final loss (last 100 steps) {losses[-100:].mean():.4f}")

  predict = jax.jit(lambda p, x: jnp.argmax(model.apply({"params": p}, x), -1))
  acc_train = float((np.asarray(predict(params, x_train)) == y_train).mean())
  pred_held = np.asarray(predict(params, x_held))
  acc_held = float((pred_held == y_held).mean())
  print(f"train accuracy {acc_train:.4f}; held-out accuracy {acc_held:.4f} "
        f"({int((pred_held == y_held).sum())}/{len(y_held)})")
  params = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), params)
  save_classifier_params(params, args.out)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
