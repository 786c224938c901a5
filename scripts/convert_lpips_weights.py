"""Converts the torch `lpips.LPIPS(net='vgg', version='0.1')` weights to an .npz for cmjax.lpips.

The lin layers come from the lpips package (`lpips/weights/v0.1/vgg.pth`, shipped with it). The VGG16
backbone is torchvision's ImageNet model, which torchvision downloads on first use unless cached; offline,
pass the torchvision checkpoint with --vgg-weights, or use --random-backbone (tests only: not perceptual).

  python scripts/convert_lpips_weights.py --out lpips_vgg.npz
  python scripts/convert_lpips_weights.py --out lpips_vgg.npz --vgg-weights vgg16-397923af.pth
  python scripts/convert_lpips_weights.py --out lpips_rand.npz --random-backbone --seed 0

Output keys (flat, '/'-joined, float32): vgg/conv{block}_{i}/kernel (3, 3, I, O) HWIO, vgg/conv*/bias (O,),
lin{l}/kernel (1, 1, C_l, 1); read them with cmjax.lpips.load_lpips_params. Needs numpy, torch, torchvision,
lpips (and safetensors for a .safetensors output); does not import jax.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import warnings
from unittest import mock

import numpy as np


def import_lpips():
  """Imports the lpips package, working around a torchvision whose C extension cannot load.

  A CUDA-built torchvision wheel next to a CPU-only torch fails at import time in
  torchvision/_meta_registrations.py ("operator torchvision::nms does not exist"): its C ops are
  missing, yet two fake-kernel registrations for them are unconditional. lpips needs only the pure-Python
  torchvision.models.vgg16, so on exactly that error the import is retried with those registrations
  turned into no-ops. Any other import error propagates.
  """
  try:
    import lpips
    return lpips
  except RuntimeError as e:
    if "torchvision::" not in str(e):
      raise
  import torch

  for name in [m for m in sys.modules if m == "torchvision" or m.startswith(("torchvision.", "lpips"))]:
    del sys.modules[name]
  with mock.patch.object(torch.library, "register_fake", lambda *a, **k: (lambda fn: fn)):
    importlib.import_module("torchvision")
  import lpips
  return lpips


def build_torch_lpips(random_backbone: bool = False, seed: int = 0, vgg_weights: str | None = None):
  """lpips.LPIPS(net='vgg', version='0.1') in eval mode, lin layers from the shipped v0.1 file.

  Args:
    random_backbone: pnet_rand=True: torchvision's random VGG16 init (seeded), nothing downloaded.
    seed: torch.manual_seed used before constructing the model.
    vgg_weights: a local torchvision vgg16 state dict (features.{idx}.{weight,bias}); implies no download.
  Returns:
    the torch module.
  """
  import torch

  lpips = import_lpips()
  torch.manual_seed(seed)
  with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():  # lpips prints its set-up
    warnings.filterwarnings("ignore", message=".*(pretrained|weight enum).*", category=UserWarning)
    model = lpips.LPIPS(net="vgg", version="0.1", pretrained=True,
                        pnet_rand=random_backbone or vgg_weights is not None)
  if vgg_weights is not None:
    state = torch.load(vgg_weights, map_location="cpu")
    with torch.no_grad():
      for k in range(1, 6):
        for idx, module in getattr(model.net, f"slice{k}").named_children():
          if isinstance(module, torch.nn.Conv2d):
            module.weight.copy_(state[f"features.{idx}.weight"])
            module.bias.copy_(state[f"features.{idx}.bias"])
  return model.eval()


def convert_state_dict(torch_model) -> dict[str, np.ndarray]:
  """lpips.LPIPS(net='vgg') module -> {flat key: float32 array} in cmjax.lpips' layout (OIHW -> HWIO).

  The 13 convs are named by block (lpips' slice1..slice5 = VGG blocks 1..5) and order within the block.
  """
  import torch

  def hwio(w: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(w.detach().cpu().float().numpy().transpose(2, 3, 1, 0))

  out: dict[str, np.ndarray] = {}
  for block in range(1, 6):
    convs = [m for m in getattr(torch_model.net, f"slice{block}").children() if isinstance(m, torch.nn.Conv2d)]
    for i, conv in enumerate(convs, start=1):
      out[f"vgg/conv{block}_{i}/kernel"] = hwio(conv.weight)
      out[f"vgg/conv{block}_{i}/bias"] = conv.bias.detach().cpu().float().numpy().copy()
  for layer, lin in enumerate(torch_model.lins):
    convs = [m for m in lin.model.children() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 1 and convs[0].bias is None, f"unexpected lin{layer} layout: {lin}"
    out[f"lin{layer}/kernel"] = hwio(convs[0].weight)
  n_convs = sum(k.endswith("/kernel") and k.startswith("vgg/") for k in out)
  if n_convs != 13 or len(torch_model.lins) != 5:
    raise ValueError(f"expected 13 VGG16 convs and 5 lin layers, got {n_convs} and {len(torch_model.lins)}")
  return out


def save(arrays: dict[str, np.ndarray], path: str) -> None:
  """Writes the flat arrays to .npz (or .safetensors, which needs the safetensors package)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  if path.endswith(".safetensors"):
    from safetensors.numpy import save_file
    save_file(arrays, path)
  elif path.endswith(".npz"):
    np.savez(path, **arrays)
  else:
    raise ValueError(f"--out must end in .npz or .safetensors, got {path}")


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", required=True, help="output .npz (or .safetensors)")
  parser.add_argument("--random-backbone", action="store_true",
                      help="random VGG16 (lpips pnet_rand=True); for tests only, not a perceptual metric")
  parser.add_argument("--seed", type=int, default=0, help="torch seed for --random-backbone")
  parser.add_argument("--vgg-weights", default=None,
                      help="local torchvision vgg16 checkpoint (e.g. vgg16-397923af.pth) instead of downloading")
  args = parser.parse_args(argv)
  try:
    model = build_torch_lpips(args.random_backbone, args.seed, args.vgg_weights)
  except OSError as e:  # urllib's URLError included: torchvision could not download the backbone
    if args.random_backbone or args.vgg_weights:
      raise
    raise SystemExit(f"could not get torchvision's ImageNet VGG16 weights ({e}); download "
                     "https://download.pytorch.org/models/vgg16-397923af.pth elsewhere and pass --vgg-weights") from e
  arrays = convert_state_dict(model)
  save(arrays, args.out)
  n = sum(a.size for a in arrays.values())
  print(f"wrote {len(arrays)} arrays ({n:,} parameters) to {args.out}")


if __name__ == "__main__":
  main()
