"""Converts diffusers AutoencoderKL weights (the SD VAE, e.g. `stabilityai/sd-vae-ft-ema` or
`sd-vae-ft-mse`) to an .npz for cmjax.models.vae, plus its config as a .json beside it.

  python scripts/convert_sd_vae.py sd-vae-ft-ema/ --out sd_vae_ft_ema.npz
  python scripts/convert_sd_vae.py sd-vae-ft-mse/diffusion_pytorch_model.safetensors --out vae.npz
  python scripts/convert_sd_vae.py vae.bin --sd-config --out vae.npz        # no config.json

The input is a diffusers model directory (config.json + diffusion_pytorch_model.safetensors, or a
pipeline directory with a vae/ subfolder) or a weights file. The config is --config, else the
config.json beside the weights, else (with --sd-config only) the SD f8c4 config of
cmjax.models.vae.sd_vae(). .safetensors files are read by cmjax's own reader, .bin files
(torch.save pickles) by cmjax.weights.safe_pickle's allow-listed unpickler: no torch needed,
nothing from the file is executed. The file is checked against the config: the first missing,
wrongly-shaped or unknown tensor is named and nothing is written.

Output: OUT.npz with flat '/'-joined float32 keys in the linen layout (e.g.
encoder/down_blocks_0/resnets_0/conv1/kernel (3, 3, 128, 128)), the cmjax.param_files format,
and OUT.json with the AutoencoderKL fields. Read both with
cmjax.weights.vae_diffusers.load_vae_npz(OUT.npz).
"""
from __future__ import annotations

import argparse
import sys

from cmjax.models.vae import sd_vae
from cmjax.param_files import flatten_params
from cmjax.weights.safe_pickle import WeightsFileError
from cmjax.weights.vae_diffusers import (convert_state_dict, find_weights, read_state_dict,
                                         save_vae_npz, vae_config, vae_from_config)


def convert(path: str, out: str, config: str | None = None, sd_config: bool = False) -> dict:
  """Reads the weights at `path`, checks them against the config, writes OUT(.npz, .json);
  returns the flat arrays written."""
  weights, found = find_weights(path)
  if config is None and found is None and not sd_config:
    raise WeightsFileError(f"{weights}: no config.json beside it; pass --config or --sd-config")
  vae = vae_from_config(config or found) if (config or found) else sd_vae()
  params = convert_state_dict(read_state_dict(weights), vae, where=weights)
  save_vae_npz(params, vae, out)
  return {"config": vae_config(vae), "arrays": flatten_params(params)}


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("path", help="diffusers model directory or weights file (.safetensors / .bin)")
  parser.add_argument("--out", required=True,
                      help="output .npz (the config goes to the same name .json)")
  parser.add_argument("--config", default=None,
                      help="diffusers config.json (default: beside the weights)")
  parser.add_argument("--sd-config", action="store_true",
                      help="without a config.json, assume the SD f8c4 VAE config (sd-vae-ft-*)")
  args = parser.parse_args(argv)
  try:
    result = convert(args.path, args.out, args.config, args.sd_config)
  except WeightsFileError as e:
    sys.exit(f"convert_sd_vae: error: {e}")
  n = sum(a.size for a in result["arrays"].values())
  print(f"wrote {len(result['arrays'])} arrays ({n:,} parameters) to {args.out}; config "
        f"{result['config']}")


if __name__ == "__main__":
  main()
