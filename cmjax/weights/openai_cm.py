"""OpenAI's released consistency models -> cmjax backbones, parameter trees and preconditioners.

Two code bases (Song, Dhariwal, Chen & Sutskever 2023, "Consistency Models", ICML):

1. github.com/openai/consistency_models (PyTorch; ImageNet-64, LSUN-256): `.pt` files are plain
   `torch.save(model.state_dict())` of guided-diffusion's `UNetModel` (`cm/unet.py`, built by
   `cm/script_util.py create_model` from the README flags). They are read with
   `cmjax.weights.safe_pickle.load_torch_file` (no torch, nothing executed) and mapped onto
   cmjax's ADM (`cmjax.models.adm_unet.ADMUNet`, EDM's DhariwalUNet, itself a port of the same
   network). Block by block (cm/unet.py, cm/nn.py vs EDM's DhariwalUNet):
     * time embedding: `timestep_embedding(t, model_channels)` = [cos, sin](t 10000^(-i/half)),
       = cmjax `positional_embedding(endpoint=False)`; then Linear-SiLU-Linear (time_embed.0/.2 =
       map_layer0/1), emb width 4 model_channels. Identical. The time input differs: CM feeds
       t = 1000 * 0.25 * log(sigma + 1e-44) (`karras_diffusion.py KarrasDenoiser.denoise`), EDM
       0.25 log(sigma): `OpenAICMPreconditioner` feeds the CM value.
     * label embedding: nn.Embedding(num_classes, emb) added after time_embed = EDM's bias-free
       map_label on a one-hot label (kernel (N, E) = the Embedding weight as stored). Identical.
     * ResBlock (resblock_updown=True): GroupNorm-SiLU-[avg-pool 2x2 | nearest x2]-conv3x3,
       then with use_scale_shift_norm=True (ImageNet-64) emb_layers SiLU-Linear to [scale,
       shift], norm * (1 + scale) + shift, or with use_scale_shift_norm=False (LSUN-256)
       emb_layers SiLU-Linear to C added to h before the norm, norm(h + emb); SiLU-dropout-
       conv3x3, skip Identity or 1x1 conv, skip scale 1 = EDM's UNetBlock with adaptive_scale
       True / False (ADMUNet's `adaptive_scale` field; the emb_layers weight is (2C, E) / (C, E)),
       box filter [1, 1] resampling, resample_proj=False. Identical.
     * AttentionBlock: x + proj_out(attn(qkv(norm(x)))), softmax(q k^T / sqrt(d)), heads =
       C // num_head_channels (the flash path `QKVFlashAttention`, which the released models
       use: UNetModel never passes attention_type). Identical math; the qkv output channels are
       laid out (qkv, head, d) in CM ("b (three h d) s") but (head, d, qkv) in EDM/cmjax, so the
       qkv weight and bias are permuted (`openai_cm_torch._qkv_to_cmjax`).
     * GroupNorm: CM's GroupNorm32 has 32 groups on every width, EDM/cmjax min(32, C // 4): the
       same for C >= 128 (every GroupNorm of the released ImageNet-64 and LSUN-256 networks, whose
       narrowest width is 192 / 256); a file with a narrower GroupNorm gets
       model_kwargs['norm_groups'] = 32, which needs that ADMUNet field (`make_model` refuses
       otherwise). eps 1e-5 in both.
     * attention heads: cmjax ADMUNet has 64 channels per head (CM's num_head_channels 64, the
       released flags); another width is returned as model_kwargs['channels_per_head'].
     * output GroupNorm-SiLU-conv3x3, decoder concat [h, skip], skip order: identical.
   The flags: a file without flags gets the README flags of the released network its tensors
   show (`released_flags`): LSUN-256 (bedroom, cat: no label embedding, 256-channel input conv;
   image_size 256, num_channels 256, channel_mult (1, 1, 2, 2, 4, 4), num_res_blocks 2,
   attention at 32, 16, 8 with 64 channels per head (8 / 16 heads), use_scale_shift_norm False,
   resblock_updown True, unconditional) or ImageNet-64 (the rest). Both sample with CM's
   sigma_data 0.5, sigma_min 0.002, sigma_max 80 (karras_diffusion defaults; the README's LSUN
   commands set the same). Their use_fp16=True is a run precision, not an architecture (blocks
   in float16, GroupNorm and the time MLP in float32); cmjax runs the network in the run's
   train.precision (float32 in the parity tests). Not covered (a one-line error):
   resblock_updown=False (conv / average-pool resampling layers), fractional channel_mult
   (image_size 512's 0.5), num_heads without num_head_channels where it gives other head counts
   in different blocks.
   Preconditioning (`karras_diffusion.py get_scalings_for_boundary_condition`, used when the
   training mode is consistency_*): c_skip = sd^2 / ((s - sigma_min)^2 + sd^2), c_out =
   (s - sigma_min) sd / sqrt(s^2 + sd^2), c_in = 1 / sqrt(s^2 + sd^2) = cmjax's
   ConsistencyPreconditioner; the EDM teachers (edm_imagenet64_ema.pt) use `get_scalings`
   (EDM's Table 1) = EDMPreconditioner; both with CM's c_noise above.

2. github.com/openai/consistency_models_cifar10 (JAX/Flax; CIFAR-10): checkpoints are
   `flax.serialization.to_bytes(State)` msgpack files, read with `msgpack_restore` (data only),
   holding score_sde's NCSN++ (`jcm/models/ncsnpp.py`, configs/cifar10_ve_cd.py), which EDM's
   SongUNet NCSN++ reproduces block for block; the names map onto cmjax's SongUNet
   (`flax_to_cmjax`), the file's GaussianFourierProjection W becomes
   model_kwargs['fourier_freqs'], and their c_noise 0.25 log(t) is cmjax's
   (ConsistencyPreconditioner / EDMPreconditioner as they are).

`load_openai_cm(path, **arch)` -> `ImportedNetwork` (model_kwargs for config.model, params,
preconditioner), as `cmjax.weights.edm_pickle.load_edm_network`. The `.pt` mapping lives in
`cmjax.weights.openai_cm_torch`, the msgpack one in `cmjax.weights.openai_cm10`; their public
names are importable from here.
"""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from cmjax.errors import WeightsFileError
from cmjax.parametrization import ConsistencyPreconditioner, EDMPreconditioner
from cmjax.weights.openai_cm10 import (CIFAR10_CONFIG, ENTRIES, flatten_state,  # noqa: F401
                                       flax_to_cmjax, read_openai_msgpack)
from cmjax.weights.openai_cm_torch import (DEFAULT_CHANNEL_MULT, IMAGENET64_FLAGS,  # noqa: F401
                                           LSUN256_FLAGS, RELEASED_FLAGS, expected_shapes,
                                           read_openai_torch, released_flags, torch_to_cmjax)


# ---------------------------------------------------------------------------------------------
# Preconditioning.

@dataclasses.dataclass(frozen=True)
class OpenAICMPreconditioner(ConsistencyPreconditioner):
  """CM's consistency function (openai/consistency_models `KarrasDenoiser.denoise` with
  distillation=True): f(x, s) = c_skip x + c_out F(c_in x, c_noise), CM Appendix C:
  c_skip = sd^2 / ((s - sigma_min)^2 + sd^2), c_out = (s - sigma_min) sd / sqrt(s^2 + sd^2),
  c_in = 1 / sqrt(s^2 + sd^2), and c_noise = 1000 * 0.25 * log(s + 1e-44) (CM's time input;
  cmjax's ConsistencyPreconditioner feeds 0.25 log(s)). x (B, H, W, C), s (B,)."""
  c_noise_scale: float = 250.0

  def coefficients(self, t):
    """(c_skip, c_out, c_in, c_noise), each shaped like t."""
    c_skip, c_out, c_in, _ = super().coefficients(t)
    return c_skip, c_out, c_in, self.c_noise_scale * jnp.log(t + 1e-44)


@dataclasses.dataclass(frozen=True)
class OpenAIEDMPreconditioner(EDMPreconditioner):
  """CM's EDM denoiser (`KarrasDenoiser.denoise` with distillation=False, the teachers
  edm_imagenet64_ema.pt / edm_bedroom256_ema.pt): EDM Table 1 scalings D(x; s) = c_skip x +
  c_out F(c_in x, c_noise) with c_noise = 1000 * 0.25 * log(s + 1e-44). x (B, H, W, C), s (B,)."""
  c_noise_scale: float = 250.0

  def coefficients(self, s):
    """(c_skip, c_out, c_in, c_noise), each shaped like s."""
    c_skip, c_out, c_in, _ = super().coefficients(s)
    return c_skip, c_out, c_in, self.c_noise_scale * jnp.log(s + 1e-44)


def cm_preconditioner(boundary: bool = True, sigma_data: float = 0.5, sigma_min: float = 0.002):
  """The preconditioner CM's code wraps a file's network in: boundary=True for consistency
  models (cd_*/ct_* files: `--training_mode consistency_*`), False for the EDM teachers."""
  if boundary:
    return OpenAICMPreconditioner(sigma_data, sigma_min)
  return OpenAIEDMPreconditioner(sigma_data)


# ---------------------------------------------------------------------------------------------
# What a file holds, the backbone, the loaders.

@dataclasses.dataclass
class OpenAICheckpoint:
  """What an OpenAI CM file holds: path, format ('torch' | 'flax'), the architecture used
  (flags / config after defaults), and name -> numpy array as stored (torch or flax layout)."""
  path: str
  format: str
  arch: dict
  tensors: dict


def make_model(model_kwargs: dict):
  """The cmjax backbone for `torch_to_cmjax` / `flax_to_cmjax` kwargs; one line when cmjax's
  network has no field for a rule the file needs (norm_groups, channels_per_head,
  fourier_freqs)."""
  from cmjax.models import MODELS, model_fields

  name = model_kwargs["name"]
  extra = sorted(set(model_kwargs) - {"name"} - set(model_fields(name)))
  why = {"norm_groups": "guided-diffusion's GroupNorm32 (32 groups) on fewer than 128 channels, "
                        "where cmjax uses min(32, C // 4)",
         "channels_per_head": f"{model_kwargs.get('channels_per_head')} channels per attention "
                              f"head",
         "fourier_freqs": "the file's NCSN++ Fourier frequencies"}
  if extra:
    raise WeightsFileError(f"cmjax {name} has no '{extra[0]}' field, so it cannot express "
                           f"{why.get(extra[0], extra[0])}")
  return MODELS[name](**{k: v for k, v in model_kwargs.items() if k != "name"})


def load_openai_cm(path: str, boundary: bool = True, sigma_data: float = 0.5,
                   sigma_min: float = 0.002, **arch):
  """A released OpenAI consistency model (or EDM teacher) -> `ImportedNetwork`.

  `.pt` (openai/consistency_models): `**arch` are the README flags (`torch_to_cmjax`);
  boundary=True for cd_*/ct_* files, False for edm_*_ema.pt teachers. A flax msgpack
  checkpoint (openai/consistency_models_cifar10) goes to `load_openai_cm10` (`**arch` are then
  its model config fields and `entry`). D or f of the file's
  network is then `net.precond(lambda x_in, c_noise: make_model(net.model_kwargs).apply(
  {'params': net.params}, x_in, c_noise, class_labels=labels), x (B, H, W, C), sigma (B,))`,
  x in [-1, 1] NHWC.
  """
  from cmjax.weights.edm_pickle import ImportedNetwork

  if _is_msgpack(path):
    return load_openai_cm10(path, boundary=boundary, sigma_data=sigma_data, sigma_min=sigma_min,
                            **arch)
  tensors = read_openai_torch(path)
  kwargs, params, a = torch_to_cmjax(path, tensors, **arch)
  read = OpenAICheckpoint(path, "torch", a, tensors)
  return ImportedNetwork(kwargs, params, cm_preconditioner(boundary, sigma_data, sigma_min), read)


def load_openai_cm10(path: str, entry: str = "params_ema", boundary: bool = True,
                     sigma_data: float = 0.5, sigma_min: float = 0.002, **config):
  """A consistency_models_cifar10 checkpoint (flax msgpack) -> `ImportedNetwork` with cmjax's
  own preconditioners, whose c_noise 0.25 log(t) is theirs: ConsistencyPreconditioner
  (boundary=True, `get_distiller_fn`, CD/CT checkpoints) or EDMPreconditioner (False,
  `get_denoiser_fn`, the EDM teacher edm_cifar10_ema). `**config`: see `flax_to_cmjax`."""
  from cmjax.weights.edm_pickle import ImportedNetwork

  state = read_openai_msgpack(path)
  kwargs, params, c = flax_to_cmjax(path, state, entry, **config)
  precond = (ConsistencyPreconditioner(sigma_data, sigma_min) if boundary
             else EDMPreconditioner(sigma_data))
  read = OpenAICheckpoint(path, "flax", {**c, "entry": entry}, flatten_state(state, entry))
  return ImportedNetwork(kwargs, params, precond, read)


def _is_msgpack(path: str) -> bool:
  """True for a flax msgpack file (not a zip / legacy torch file)."""
  try:
    with open(path, "rb") as f:
      head = f.read(8)
  except OSError as e:
    raise WeightsFileError(f"cannot read {path}: {e.strerror or e}") from None
  return bool(head) and head[:4] != b"PK\x03\x04" and head[:2] != b"\x80\x02" and (
      0x80 <= head[0] <= 0x8f or head[0] in (0xde, 0xdf))
