"""Converts pytorch-fid's FID Inception-v3 weights to an .npz for cmjax.evaluation.inception.

The weights are pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (the 2015 TF Inception graph of the
original FID code, ported to torch). Without --torch-weights, pytorch-fid downloads it (or reuses the copy
in ~/.cache/torch/hub/checkpoints); offline, pass the file. --random builds the same network with seeded
random weights and non-trivial BatchNorm statistics: for tests only, its FIDs are meaningless.

  python scripts/convert_inception_weights.py --out inception_fid.npz
  python scripts/convert_inception_weights.py --out inception_fid.npz \\
      --torch-weights pt_inception-2015-12-05-6726825d.pth
  python scripts/convert_inception_weights.py --out inception_rand.npz --random --seed 0

Output keys (flat, '/'-joined, float32; the torch module names with '.' -> '/'): {layer}/conv/kernel
(kh, kw, I, O) HWIO and {layer}/bn/{scale,bias,mean,var} (O,) for the 94 conv layers, e.g.
Mixed_7c/branch3x3dbl_3a/conv/kernel. The 1008-way fc layer and num_batches_tracked are dropped. Read with
cmjax.evaluation.inception.load_inception_params. --torch-weights needs only torch; the default and --random
also need torchvision and pytorch-fid. Does not import jax.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from unittest import mock

import numpy as np

# pytorch_fid.inception.InceptionV3([3]).blocks[i][j] is the torchvision Inception3 submodule named here.
BLOCK_NAMES = (
    ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3"),
    ("Conv2d_3b_1x1", "Conv2d_4a_3x3"),
    ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"),
    ("Mixed_7a", "Mixed_7b", "Mixed_7c"),
)
N_CONVS = 94  # BasicConv2d layers up to pool3
BN_NAMES = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}


def import_pytorch_fid():
  """Imports pytorch_fid.inception, working around a torchvision whose C extension cannot load.

  A CUDA-built torchvision next to a CPU-only torch fails at import ("operator torchvision::nms does not
  exist") because its fake-kernel registrations for the missing C ops are unconditional. pytorch-fid needs
  only the pure-Python torchvision.models.inception, so on exactly that error the import is retried with
  torch.library.register_fake turned into a no-op. Any other import error propagates.
  """
  try:
    return importlib.import_module("pytorch_fid.inception")
  except RuntimeError as e:
    if "torchvision::" not in str(e):
      raise
  import torch

  for name in [m for m in sys.modules if m == "torchvision" or m.startswith(("torchvision.", "pytorch_fid"))]:
    del sys.modules[name]
  with mock.patch.object(torch.library, "register_fake", lambda *a, **k: (lambda fn: fn)):
    importlib.import_module("torchvision")
  return importlib.import_module("pytorch_fid.inception")


def _randomize(model, seed: int) -> None:
  """Random BN affine params; running mean/var calibrated on random images (non-trivial, data-scaled).

  torchvision's default conv init (pytorch-fid passes init_weights=False) shrinks activations layer by
  layer, so identity BatchNorms would give vanishing features. Instead the running statistics are set to
  the batch statistics of uniform-noise images at 32x32 (smooth once upsampled) and 299x299 (pixel
  noise), averaged: scale in [0.5, 1.5), bias ~ 0.2 N(0, 1), means/variances far from 0/1, and pool3
  features O(10) on either kind of input.
  """
  import torch

  gen = torch.Generator().manual_seed(seed + 1)
  bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
  with torch.no_grad():
    for bn in bns:
      bn.weight.copy_(0.5 + torch.rand(bn.weight.shape, generator=gen))
      bn.bias.copy_(0.2 * torch.randn(bn.bias.shape, generator=gen))
      bn.reset_running_stats()
      bn.momentum = None  # cumulative average over the calibration batches
    model.train()
    for size in (32, 299):
      model(torch.rand(2, 3, size, size, generator=gen))  # resized to 299 inside
    model.eval()
    for bn in bns:
      bn.momentum = 0.1


def build_torch_model(random: bool = False, seed: int = 0, torch_weights: str | None = None):
  """pytorch_fid.inception.InceptionV3([3]) (pool3, resize + normalize_input on) in eval mode.

  Args:
    random: seeded random weights instead of the FID weights (nothing loaded or downloaded); tests only.
    seed: torch.manual_seed before construction (and the seed of the BatchNorm randomisation).
    torch_weights: a local pt_inception-2015-12-05-6726825d.pth used instead of downloading.
  Returns:
    the torch module; model(x (B, 3, H, W) in [0, 1])[0] is (B, 2048, 1, 1).
  """
  import torch

  fid = import_pytorch_fid()
  torch.manual_seed(seed)
  if random:
    inception3 = sys.modules["torchvision.models.inception"].Inception3
    with mock.patch.object(fid, "load_state_dict_from_url", lambda *a, **k: {}), \
         mock.patch.object(inception3, "load_state_dict", lambda self, *a, **k: None):
      model = fid.InceptionV3([3])
    _randomize(model, seed)
  elif torch_weights is not None:
    state = torch.load(torch_weights, map_location="cpu")
    with mock.patch.object(fid, "load_state_dict_from_url", lambda *a, **k: state):
      model = fid.InceptionV3([3])
  else:
    model = fid.InceptionV3([3])
  return model.eval()


def _named_state(model_or_state) -> dict:
  """{torchvision Inception3 name: tensor} from an InceptionV3 wrapper, an Inception3, or a state dict."""
  state = model_or_state if isinstance(model_or_state, dict) else model_or_state.state_dict()
  out = {}
  for key, value in state.items():
    if key.startswith("blocks."):  # pytorch-fid wrapper: blocks.{i}.{j}.rest
      _, i, j, rest = key.split(".", 3)
      names = BLOCK_NAMES[int(i)]
      if int(j) >= len(names):
        continue  # pooling layers have no state
      key = f"{names[int(j)]}.{rest}"
    out[key] = value
  return out


def convert_state_dict(model_or_state) -> dict[str, np.ndarray]:
  """FID Inception torch weights -> {flat key: float32 array} in cmjax's layout (OIHW -> HWIO).

  Accepts pytorch-fid's InceptionV3 wrapper, the underlying torchvision Inception3, or the raw state dict
  of pt_inception-2015-12-05-6726825d.pth (keys like Mixed_5b.branch1x1.conv.weight). fc.*, AuxLogits.*
  and num_batches_tracked are dropped.
  """
  out: dict[str, np.ndarray] = {}
  for key, value in _named_state(model_or_state).items():
    if key.startswith(("fc.", "AuxLogits.")) or key.endswith("num_batches_tracked"):
      continue
    arr = value.detach().cpu().float().numpy() if hasattr(value, "detach") else np.asarray(value, np.float32)
    *layer, module, param = key.split(".")
    prefix = "/".join(layer)
    if module == "conv" and param == "weight" and arr.ndim == 4:
      out[f"{prefix}/conv/kernel"] = np.ascontiguousarray(arr.transpose(2, 3, 1, 0))
    elif module == "bn" and param in BN_NAMES:
      out[f"{prefix}/bn/{BN_NAMES[param]}"] = np.ascontiguousarray(arr)
    else:
      raise ValueError(f"unexpected FID Inception tensor '{key}' with shape {tuple(arr.shape)}")
  n_convs = sum(k.endswith("/conv/kernel") for k in out)
  if n_convs != N_CONVS or len(out) != 5 * N_CONVS:
    raise ValueError(f"expected {N_CONVS} conv layers ({5 * N_CONVS} arrays), got {n_convs} ({len(out)})")
  return out


def save(arrays: dict[str, np.ndarray], path: str) -> None:
  """Writes the flat arrays to an .npz."""
  if not path.endswith(".npz"):
    raise ValueError(f"--out must end in .npz, got {path}")
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  np.savez(path, **arrays)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", required=True, help="output .npz")
  parser.add_argument("--torch-weights", default=None,
                      help="local pt_inception-2015-12-05-6726825d.pth instead of downloading")
  parser.add_argument("--random", action="store_true", help="seeded random weights; for tests only")
  parser.add_argument("--seed", type=int, default=0, help="torch seed for --random")
  args = parser.parse_args(argv)
  if args.random and args.torch_weights:
    parser.error("--random and --torch-weights are exclusive")
  if args.torch_weights is not None:
    import torch  # the raw state dict converts without pytorch-fid / torchvision
    arrays = convert_state_dict(torch.load(args.torch_weights, map_location="cpu"))
  else:
    try:
      model = build_torch_model(random=args.random, seed=args.seed)
    except OSError as e:  # urllib's URLError included: could not download the FID weights
      if args.random:
        raise
      raise SystemExit(f"could not get pytorch-fid's FID Inception weights ({e}); download "
                       "pt_inception-2015-12-05-6726825d.pth elsewhere and pass --torch-weights") from e
    arrays = convert_state_dict(model)
  save(arrays, args.out)
  n = sum(a.size for a in arrays.values())
  print(f"wrote {len(arrays)} arrays ({n:,} parameters) to {args.out}")


if __name__ == "__main__":
  main()
