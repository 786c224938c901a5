"""EDM2's magnitude-preserving U-Net (Karras et al. 2024, "Analyzing and Improving the Training
Dynamics of Diffusion Models", config G, Fig. 21), a linen port of NVlabs/edm2
`training/networks_edm2.py` class UNet (commit 4bf8162), plus the reader of its PyTorch weights and
the forced weight normalisation used in training.

The ImageNet-64 backbone of ECT and sCM (edm2-img64-{xs,s,m,l,xl}; `edm2_config`). Parameters at
64x64x3, label_dim 1000 (EDM2's UNet, from `sum(p.numel() for p in net.unet.parameters())` of
their code; buffers not counted): xs 124,710,821; s 280,209,253; m 497,803,045; l 777,492,197;
xl 1,119,276,709 (tests/test_edm2_unet.py). Layers: `cmjax.models.edm2_layers`.

Like the other cmjax backbones the network sees (c_in x, c_noise); EDM2's preconditioning and its
uncertainty (log-variance) head are in `cmjax.models.edm2_precond` (c_noise = ln(sigma) / 4, the
same as `cmjax.parametrization.EDMPreconditioner`).

Forced weight normalisation (EDM2 Eq. 66, `MPConv.forward` in train mode: w <- normalize(w) in
place before use). The forward pass here is pure (`MPConv` normalises a copy, Eq. 47). Training
that reproduces EDM2 projects the stored kernels with `edm2_force_normalize(params)`:
  exact EDM2 order: at the start of every train step, p <- edm2_force_normalize(p); compute the
    loss and gradient at p; p <- p + update; the EMA then averages these post-update weights
    (EDM2 normalises them in place at the next train-mode forward, after its EMA update);
  equivalently for the trained weights (not for the EMA), project after each update and once
    at initialisation: p <- edm2_force_normalize(p + update).
Either way the network computes with normalize(normalize(w_raw)), exactly as EDM2's train-mode
forward (its in-place copy makes `w` the normalised tensor before the second normalize). EMA and
the stored weights need no projection for sampling: the forward normalises anyway. cmjax's runs
do the exact EDM2 order for every model.name='edm2' run (`cmjax.run`:
`make_train_step(project=edm2_force_normalize)`; tests/test_edm2_training.py).

MPFourier's random frequencies/phases (EDM2 buffers) are stored in 'params' but not trained
(stop_gradient; with weight decay on, cmjax's optimiser zeroes their updates through
`buffer_leaves`, and `edm2_trainable_mask` marks them for your own optax chain). With
`make_model_fn(compute_dtype=bfloat16)` every float param is cast, these included: the Fourier
frequencies are then rounded to bfloat16 (a fixed perturbation of < 0.4% of each frequency).
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import ClassVar, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cmjax.models.edm2_layers import (Block, MPConv, MPFourier, mp_cat, mp_silu, mp_sum,
                                      normalize_weight)
from cmjax.models.remat import remat_block
from cmjax.models.song_layers import label_vectors
from cmjax.param_files import flatten_params, unflatten_params

Array = jax.Array

FOURIER_BUFFERS = ("freqs", "phases")  # MPFourier's EDM2 buffers (never trained)


class EDM2UNet(nn.Module):
  """EDM2 U-Net: x (B, H, W, C) NHWC, c_noise (B,) -> (B, H, W, out_channels or C), x.dtype.

  Called as `model.apply({'params': p}, x, c_noise, train=False, class_labels=None,
  augment_labels=None, c_noise_2=None, rngs={'dropout': key})` (rngs only for train=True with
  dropout), the cmjax backbone convention. H = W, divisible by 2^(len(channel_mult) - 1).
  c_noise is EDM2's noise label ln(sigma) / 4. EDM2 has no augmentation labels and no second time:
  augment_labels and c_noise_2 must be None.

  Embedding (EDM2 UNet.forward): emb = mp_silu(mp_sum(emb_noise(MPFourier(c_noise)),
  emb_label(onehot * sqrt(label_dim)), label_balance)), float32, width model_channels *
  (channel_mult_emb or max(channel_mult)). Encoder: concat a constant-1 channel, 3x3 MPConv to
  model_channels * channel_mult[0], per level a 'down' block (levels > 0) and num_blocks blocks,
  every output a skip. Decoder: per level from the lowest two blocks (in0 with attention, in1) or
  an 'up' block, then num_blocks + 1 blocks on mp_cat(h, skip, concat_balance); out_conv: a 3x3
  MPConv with the learned scalar gain out_gain (0 at init, so the network starts at 0).

  Attributes:
    out_channels: output channels; 0 = the input's channel count (EDM2: img_channels).
    label_dim: number of classes, 0 = unconditional. class_labels: (B,) ints (one-hot inside) or
      (B, label_dim) vectors; None = all-zero (EDM2 Precond's unconditional input).
    model_channels, channel_mult, num_blocks, attn_resolutions: widths, levels and the level
      resolutions (H >> level) whose blocks have self-attention.
    channel_mult_noise, channel_mult_emb: Fourier / embedding widths as multiples of
      model_channels; 0 = EDM2's default (channel_mult[0] / max(channel_mult)).
    label_balance, concat_balance, res_balance, attn_balance: EDM2's mp_sum / mp_cat weights.
    channels_per_head: attention heads = block channels // channels_per_head (0 heads = none).
    dropout: rate in every block's residual branch (train=True only; rng stream 'dropout').
    dropout_max_res: 0 = dropout in every block (EDM2); R > 0 = only in blocks whose level
      resolution is <= R (ECT's `dropout_res`, locuslab/ect branch imgnet networks_edm2.py).
    label_dropout: probability of zeroing an example's class vector in training (classifier-free
      guidance; not in EDM2), drawn from the 'dropout' stream.
    clip_act: clip every block's output to [-clip_act, clip_act]; 0 = no clipping.
    remat: recompute each residual block's activations in the backward pass (`nn.remat`,
      jax.checkpoint) instead of storing them: less activation memory for about one more
      forward pass; parameter names, outputs and gradients are unchanged (tests/test_remat.py).
  """
  buffer_leaves: ClassVar[tuple] = FOURIER_BUFFERS  # stored in 'params', never trained
  out_channels: int = 0
  label_dim: int = 0
  model_channels: int = 192
  channel_mult: Sequence[int] = (1, 2, 3, 4)
  channel_mult_noise: int = 0
  channel_mult_emb: int = 0
  num_blocks: int = 3
  attn_resolutions: Sequence[int] = (16, 8)
  label_balance: float = 0.5
  concat_balance: float = 0.5
  res_balance: float = 0.3
  attn_balance: float = 0.3
  channels_per_head: int = 64
  dropout: float = 0.0
  dropout_max_res: int = 0
  label_dropout: float = 0.0
  clip_act: float = 256.0
  remat: bool = False

  def block_dropout(self, res: int) -> float:
    """Dropout rate of a block whose level resolution is res x res (see dropout_max_res)."""
    return self.dropout if not self.dropout_max_res or res <= self.dropout_max_res else 0.0

  def _check(self, x: Array) -> None:
    """One ValueError line per bad argument or input."""
    if not self.channel_mult or self.num_blocks < 1 or self.model_channels < 1:
      raise ValueError(f"need channel_mult non-empty, num_blocks >= 1, model_channels >= 1; got "
                       f"{tuple(self.channel_mult)}, {self.num_blocks}, {self.model_channels}")
    if not (0.0 <= self.dropout < 1.0 and 0.0 <= self.label_dropout <= 1.0):
      raise ValueError(f"dropout must be in [0, 1) and label_dropout in [0, 1], got "
                       f"{self.dropout}, {self.label_dropout}")
    if self.dropout_max_res < 0 or self.channels_per_head < 1 or self.clip_act < 0:
      raise ValueError(f"need dropout_max_res >= 0, channels_per_head >= 1, clip_act >= 0; got "
                       f"{self.dropout_max_res}, {self.channels_per_head}, {self.clip_act}")
    levels = len(self.channel_mult)
    if x.ndim != 4 or x.shape[1] != x.shape[2] or x.shape[1] % 2 ** (levels - 1):
      raise ValueError(f"x must be (B, H, H, C) with H divisible by 2^{levels - 1}, got {x.shape}")

  def _embedding(self, c_noise: Array, class_labels, batch: int, train: bool) -> Array:
    """EDM2's noise (+ label) embedding -> (B, C_emb), float32."""
    mc = self.model_channels
    cnoise = mc * (self.channel_mult_noise or self.channel_mult[0])
    cemb = mc * (self.channel_mult_emb or max(self.channel_mult))
    c = jnp.broadcast_to(jnp.asarray(c_noise, jnp.float32), (batch,))
    emb = MPConv(cemb, 0, name="emb_noise")(MPFourier(cnoise, name="emb_fourier")(c))
    if self.label_dim:
      labels = label_vectors(class_labels, batch, self.label_dim)
      if train and self.label_dropout:
        keep = jax.random.uniform(self.make_rng("dropout"), (batch, 1)) >= self.label_dropout
        labels = labels * keep.astype(labels.dtype)
      lab = MPConv(cemb, 0, name="emb_label")(labels * math.sqrt(self.label_dim))
      emb = mp_sum(emb, lab, self.label_balance)
    elif class_labels is not None:
      raise ValueError("class_labels given but label_dim=0 (an unconditional model)")
    return mp_silu(emb)

  @nn.compact
  def __call__(self, x: Array, c_noise: Array, train: bool = False,
               class_labels: Optional[Array] = None, augment_labels: Optional[Array] = None,
               c_noise_2: Optional[Array] = None) -> Array:
    """x (B, H, H, C), c_noise (B,) or scalar -> (B, H, H, out_channels or C), x.dtype."""
    self._check(x)
    if augment_labels is not None:
      raise ValueError("EDM2UNet takes no augment_labels (EDM2 has no augmentation conditioning)")
    if c_noise_2 is not None:
      raise ValueError("EDM2UNet takes no second time c_noise_2 (EDM2 embeds one noise level)")
    batch, size, c_img = x.shape[0], x.shape[1], x.shape[-1]
    c_out = self.out_channels or c_img
    mc, last = self.model_channels, len(self.channel_mult) - 1
    emb = self._embedding(c_noise, class_labels, batch, train)

    def block(h, res, name, flavor, cout=None, **kw):
      cls = remat_block(Block, self.remat)
      return cls(out_channels=cout or h.shape[-1], flavor=flavor,
                 channels_per_head=self.channels_per_head, dropout=self.block_dropout(res),
                 res_balance=self.res_balance, attn_balance=self.attn_balance,
                 clip_act=self.clip_act, name=name, **kw)(h, emb, train)

    # Encoder.
    h = jnp.concatenate([x, jnp.ones_like(x[..., :1])], axis=-1)
    skips = []
    for level, mult in enumerate(self.channel_mult):
      res = size >> level
      tag = f"enc_{res}x{res}"
      if level == 0:
        h = MPConv(mc * mult, 3, name=f"{tag}_conv")(h)
      else:
        h = block(h, res, f"{tag}_down", "enc", resample_mode="down")
      skips.append(h)
      for idx in range(self.num_blocks):
        h = block(h, res, f"{tag}_block{idx}", "enc", mc * mult,
                  attention=res in self.attn_resolutions)
        skips.append(h)

    # Decoder.
    for level in reversed(range(last + 1)):
      res = size >> level
      tag = f"dec_{res}x{res}"
      if level == last:
        h = block(h, res, f"{tag}_in0", "dec", attention=True)
        h = block(h, res, f"{tag}_in1", "dec")
      else:
        h = block(h, res, f"{tag}_up", "dec", resample_mode="up")
      for idx in range(self.num_blocks + 1):
        h = mp_cat(h, skips.pop(), self.concat_balance)
        h = block(h, res, f"{tag}_block{idx}", "dec", mc * self.channel_mult[level],
                  attention=res in self.attn_resolutions)
    out_gain = self.param("out_gain", nn.initializers.zeros, (), jnp.float32)
    return MPConv(c_out, 3, name="out_conv")(h, gain=out_gain)


# EDM2 train_edm2.py config_presets 'edm2-img64-*' (channels, dropout); the UNet defaults of
# networks_edm2.py otherwise (channel_mult [1,2,3,4], num_blocks 3, attn_resolutions [16,8]);
# ImageNet 64x64x3, 1000 classes. Precond: sigma_data 0.5, logvar_channels 128.
EDM2_IMG64 = {"xs": (128, 0.0), "s": (192, 0.0), "m": (256, 0.10), "l": (320, 0.10),
              "xl": (384, 0.10)}


def edm2_config(name: str, **overrides) -> dict:
  """EDM2UNet kwargs of EDM2's ImageNet-64 preset 'edm2-img64-<name>', name in xs/s/m/l/xl
  (model_channels 128/192/256/320/384, dropout 0/0/0.1/0.1/0.1), overridable."""
  if name not in EDM2_IMG64:
    raise ValueError(f"unknown EDM2 ImageNet-64 preset {name!r}; known: {sorted(EDM2_IMG64)}")
  channels, dropout = EDM2_IMG64[name]
  kw = dict(label_dim=1000, model_channels=channels, channel_mult=(1, 2, 3, 4), num_blocks=3,
            attn_resolutions=(16, 8), dropout=dropout)
  fields = {f.name for f in dataclasses.fields(EDM2UNet)} - {"parent", "name"}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise ValueError(f"unknown EDM2UNet arguments {unknown}; known: {sorted(fields)}")
  return {**kw, **overrides}


def edm2_force_normalize(params):
  """EDM2's forced weight normalisation (Eq. 66) as a projection of a parameter tree: every
  'kernel' leaf (the MPConv weights, (k, k, C_in, C_out) or (C_in, C_out)) is replaced by
  normalize(kernel) over all axes but the last (unit RMS per output channel, eps 1e-4); gains and
  the Fourier buffers are unchanged. Works on EDM2UNet and EDM2Logvar params alike; pure, jittable.
  Where to call it in a train loop: see this module's docstring."""
  def leaf(path, p):
    return normalize_weight(p) if getattr(path[-1], "key", None) == "kernel" else p
  return jax.tree_util.tree_map_with_path(leaf, params)


def edm2_trainable_mask(params):
  """A tree of bools like params: False for MPFourier's buffers ('freqs', 'phases'), which are
  never trained (zero gradient), True elsewhere (e.g. for optax.masked weight decay)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], "key", None) not in FOURIER_BUFFERS, params)


_TORCH_LEAF = re.compile(r"^(?:(?P<head>logvar_fourier|logvar_linear)|"
                         r"(?P<top>emb_fourier|emb_noise|emb_label|out_conv|out_gain)|(?P<part>enc|dec)\.(?P<blk>\d+x\d+_\w+?))"
                         r"(?:\.(?P<sub>conv_res0|conv_res1|conv_skip|emb_linear|attn_qkv|"
                         r"attn_proj))?(?:\.(?P<leaf>weight|freqs|phases|emb_gain))?$")


def _torch_to_flax(name: str, a: np.ndarray):
  """One EDM2 state_dict entry -> ('unet' or 'logvar', flax path tuple, array)."""
  key = name[5:] if name.startswith("unet.") else name
  m = _TORCH_LEAF.match(key)
  if m is None or (m["leaf"] is None and m["top"] != "out_gain"):
    raise ValueError(f"unknown EDM2 parameter name {name!r}")
  tree = "logvar" if m["head"] else "unet"
  module = m["head"] or m["top"] or f"{m['part']}_{m['blk']}"
  path = (module,) + ((m["sub"],) if m["sub"] else ())
  leaf = m["leaf"]
  if module == "out_gain":
    return tree, ("out_gain",), a
  if leaf == "weight":
    if a.ndim == 4:  # (out, in, k, k) -> (k, k, in, out)
      a = a.transpose(2, 3, 1, 0)
    elif a.ndim == 2:  # (out, in) -> (in, out)
      a = a.T
    else:
      raise ValueError(f"EDM2 weight {name!r} has shape {a.shape}; expected 2 or 4 dimensions")
    leaf = "kernel"
  return tree, path + (leaf,), a


def edm2_params_from_torch(named_arrays: Mapping[str, np.ndarray],
                           expected: Optional[dict] = None) -> dict:
  """EDM2 PyTorch weights -> {'unet': EDM2UNet params, 'logvar': EDM2Logvar params}.

  named_arrays: name -> array of a `Precond` state_dict ('unet.enc.64x64_conv.weight', ...,
  'logvar_linear.weight', buffers 'unet.emb_fourier.freqs' etc. included) or of a bare `UNet`
  (no 'unet.' prefix; 'logvar' is then {}). Conv weights (out, in, k, k) become (k, k, in, out)
  kernels, linear (out, in) become (in, out); 'x.y' module paths become flax names ('enc.8x8_down'
  -> 'enc_8x8_down'). Arrays are returned as float32 numpy arrays.
  expected: optionally {'unet': tree, 'logvar': tree} of arrays or ShapeDtypeStructs (e.g. from
  jax.eval_shape of init); every key and shape must then match exactly.
  Raises a one-line ValueError for an unknown name or, with `expected`, a missing, unexpected or
  wrongly-shaped entry.
  """
  flat = {"unet": {}, "logvar": {}}
  for name, a in named_arrays.items():
    tree, path, arr = _torch_to_flax(name, np.asarray(a, np.float32))
    flat[tree]["/".join(path)] = arr
  if expected is not None:
    for tree in ("unet", "logvar"):
      want = {k: tuple(v.shape) for k, v in flatten_params(expected.get(tree, {})).items()}
      missing = sorted(set(want) - set(flat[tree]))
      extra = sorted(set(flat[tree]) - set(want))
      if missing or extra:
        raise ValueError(f"EDM2 {tree} weights: missing {missing[:3]}, unexpected {extra[:3]}")
      for k, shape in want.items():
        if flat[tree][k].shape != shape:
          raise ValueError(f"EDM2 {tree} weight {k!r} has shape {flat[tree][k].shape}, "
                           f"expected {shape}")
  return {tree: unflatten_params(entries) for tree, entries in flat.items()}


BACKBONES = {"edm2": EDM2UNet}  # config.model.name = 'edm2' (discovered by cmjax.models)
