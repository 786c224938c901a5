"""DiT, the Diffusion Transformer (Peebles & Xie 2023, "Scalable Diffusion Models with
Transformers"), as a cmjax backbone; a linen port of the authors' `models.py`
(github.com/facebookresearch/DiT, commit ed81ce2).

The backbone of the one-step methods' ImageNet-256 results (MeanFlow, shortcut models, sCM's
latent runs): a ViT on SD-VAE latents (32x32x4) with adaLN-Zero conditioning.

  tokens = patchify(x) + pos              patchify: conv with kernel = stride = patch_size;
                                          pos: fixed 2-D sin-cos embedding (not a parameter)
  c = t_embed(c_noise) [+ t2_embed(c_noise_2)] [+ y_embed(class_labels)]
  tokens = DiTBlock(tokens, c) x depth    adaLN-Zero: x += gate * f(LN(x) * (1 + scale) + shift)
  out = unpatchify(FinalLayer(tokens, c)) (B, H, W, C_out), C_out = 2 C if learn_sigma else C

Parameter counts equal the authors' model (tests/test_dit.py: XL/2 at 32x32x4, 1000 classes,
learn_sigma: 674,834,720 trainable, plus the 294,912-entry pos_embed that DiT stores as a frozen
nn.Parameter and this port computes on the fly; DiT's own log counts both, 675,129,632, Table 1's
675M). A tiny configuration matches the outputs of the authors' PyTorch code to float32 round-off.

Time input: DiT embeds raw integer timesteps t in [0, 999]; here the network embeds `c_noise`
exactly as given (the preconditioner's scaling of the noise level, e.g. 1000 t for a flow
model's t in [0, 1] reproduces DiT's range), with the same sinusoidal features (256 wide,
max_period 10000) and MLP.

Second time condition (time_conditions=2): a second TimestepEmbedder of the same form embeds
`c_noise_2` (MeanFlow's r or t - r, a shortcut model's step size) and its output is added to the
conditioning vector, as the shortcut models' DiT does (github.com/kvfrans/shortcut-models
model.py, commit 6010043: `c = te + ye + dte`, dte a second TimestepEmbedder of dt).

Mixed precision (as the other cmjax networks): with params and x cast to bfloat16 the token path
runs in bfloat16 (linear layers and patch convolution in x.dtype); LayerNorm statistics, attention
logits and softmax are float32, and the conditioning vector c (time / label embeddings and the
adaLN projections of it) is float32, cast to x.dtype where it modulates the tokens.
"""
from __future__ import annotations

import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

FREQ_DIM = 256  # DiT TimestepEmbedder.frequency_embedding_size
MAX_PERIOD = 10000.0
LN_EPS = 1e-6

_xavier = nn.initializers.xavier_uniform()
# Patch embedding: xavier on the kernel flattened to (p * p * C_in, D), as DiT initialises it.
_patch_init = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform", in_axis=(0, 1, 2),
                                               out_axis=3)
_normal02 = nn.initializers.normal(0.02)
_zeros = nn.initializers.zeros

# (hidden_size, depth, num_heads) of the paper's Table 1.
DIT_SIZES = {"S": (384, 12, 6), "B": (768, 12, 12), "L": (1024, 24, 16), "XL": (1152, 28, 16)}


def get_2d_sincos_pos_embed(embed_dim: int, grid_size: int) -> np.ndarray:
  """DiT / MAE `get_2d_sincos_pos_embed`: (grid_size^2, embed_dim) float32, tokens row-major.

  For token (i, j) (row i, column j): [sin(j w), cos(j w), sin(i w), cos(i w)], each
  embed_dim / 4 wide, w_k = 10000^(-k / (embed_dim / 4)) (Vaswani et al. 2017, Sec. 3.5, in 2-D;
  MAE's meshgrid puts the column index first).
  """
  if embed_dim % 4:
    raise ValueError(f"the 2-D sin-cos position embedding needs hidden_size divisible by 4, "
                     f"got {embed_dim}")
  omega = np.arange(embed_dim // 4, dtype=np.float64) / (embed_dim / 4.0)
  omega = 1.0 / 10000**omega

  def one_d(pos):
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)

  cols, rows = np.meshgrid(np.arange(grid_size, dtype=np.float32),
                           np.arange(grid_size, dtype=np.float32))
  return np.concatenate([one_d(cols), one_d(rows)], axis=1).astype(np.float32)


def timestep_embedding(t: Array, dim: int = FREQ_DIM, max_period: float = MAX_PERIOD) -> Array:
  """DiT TimestepEmbedder.timestep_embedding (GLIDE): t (B,) -> (B, dim) float32,
  [cos(t f), sin(t f)] with f_k = max_period^(-k / (dim/2)), k < dim/2 (zero column if dim odd)."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = jnp.asarray(t, jnp.float32)[:, None] * freqs[None]
  emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
  if dim % 2:
    emb = jnp.concatenate([emb, jnp.zeros_like(emb[:, :1])], axis=-1)
  return emb


def modulate(x: Array, shift: Array, scale: Array) -> Array:
  """adaLN modulation (DiT `modulate`): x (B, N, D), shift/scale (B, D) -> x (1 + scale) + shift."""
  return x * (1 + scale[:, None]) + shift[:, None]


def _layer_norm(name: str, dtype) -> nn.LayerNorm:
  """LayerNorm without affine parameters (eps 1e-6), float32 two-pass statistics, output dtype."""
  return nn.LayerNorm(epsilon=LN_EPS, use_bias=False, use_scale=False, use_fast_variance=False,
                      dtype=dtype, name=name)


class TimestepEmbedder(nn.Module):
  """DiT TimestepEmbedder: t (B,) -> (B, hidden_size) float32 = mlp_2(silu(mlp_0(sinusoid(t)))),
  sinusoid 256 wide (`timestep_embedding`); weights N(0, 0.02^2), biases 0 (DiT init)."""
  hidden_size: int

  @nn.compact
  def __call__(self, t: Array) -> Array:
    h = timestep_embedding(t).astype(jnp.float32)
    h = nn.Dense(self.hidden_size, kernel_init=_normal02, name="mlp_0")(h)
    return nn.Dense(self.hidden_size, kernel_init=_normal02, name="mlp_2")(nn.silu(h))


class DiTBlock(nn.Module):
  """DiT block with adaLN-Zero (paper Sec. 3.2, Fig. 3): x (B, N, D), c (B, D) float32 -> x.

    shift1, scale1, gate1, shift2, scale2, gate2 = adaLN_modulation(silu(c))   (zero init)
    x = x + gate1 * attn(modulate(LN(x), shift1, scale1))
    x = x + gate2 * mlp(modulate(LN(x), shift2, scale2))
  attn: timm Attention (fused qkv, (3, heads, head_dim) layout, softmax(q k^T / sqrt(head_dim))),
  mlp: fc1 -> GELU(tanh) -> fc2, mlp_ratio * D wide. Linear layers xavier-uniform, biases 0.
  """
  hidden_size: int
  num_heads: int
  mlp_ratio: float = 4.0

  @nn.compact
  def __call__(self, x: Array, c: Array) -> Array:
    dt, d, heads = x.dtype, self.hidden_size, self.num_heads
    mod = nn.Dense(6 * d, kernel_init=_zeros, name="adaLN_modulation")(nn.silu(c)).astype(dt)
    shift1, scale1, gate1, shift2, scale2, gate2 = jnp.split(mod, 6, axis=-1)
    dense = lambda n, name: nn.Dense(n, kernel_init=_xavier, dtype=dt, name=name)  # noqa: E731

    b, n, _ = x.shape
    h = modulate(_layer_norm("norm1", dt)(x), shift1, scale1)
    qkv = dense(3 * d, "qkv")(h).reshape(b, n, 3, heads, d // heads)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    logits = jnp.einsum("bqhc,bkhc->bhqk", q, k, preferred_element_type=jnp.float32)
    w = jax.nn.softmax(logits.astype(jnp.float32) / math.sqrt(d // heads), axis=-1).astype(dt)
    a = jnp.einsum("bhqk,bkhc->bqhc", w, v).reshape(b, n, d)
    x = x + gate1[:, None] * dense(d, "proj")(a)

    h = modulate(_layer_norm("norm2", dt)(x), shift2, scale2)
    h = nn.gelu(dense(int(d * self.mlp_ratio), "fc1")(h), approximate=True)
    return x + gate2[:, None] * dense(d, "fc2")(h)


class LabelEmbedder(nn.Module):
  """DiT LabelEmbedder: labels (B,) int32 -> (B, hidden_size) float32 rows of a
  (num_classes + [dropout_prob > 0], hidden_size) table, N(0, 0.02^2) init. In training each label
  is replaced by the null class num_classes with probability dropout_prob (classifier-free
  guidance, Ho & Salimans 2022), drawn from the 'dropout' rng stream. null_row: add the null row
  even with dropout_prob = 0 (the caller drops labels itself)."""
  num_classes: int
  hidden_size: int
  dropout_prob: float
  null_row: bool = False

  @nn.compact
  def __call__(self, labels: Array, train: bool) -> Array:
    null = self.dropout_prob > 0 or self.null_row
    if train and self.dropout_prob > 0:
      drop = jax.random.uniform(self.make_rng("dropout"), labels.shape) < self.dropout_prob
      labels = jnp.where(drop, self.num_classes, labels)
    table = self.param("embedding_table", _normal02,
                       (self.num_classes + int(null), self.hidden_size))
    # Out-of-range labels (not checkable under jit) give NaN rows, not a clipped index.
    return jnp.take(table, labels, axis=0, mode="fill", fill_value=jnp.nan).astype(jnp.float32)


class FinalLayer(nn.Module):
  """DiT FinalLayer: x (B, N, D), c (B, D) -> (B, N, features), features = p * p * C_out:
  linear(modulate(LN(x), shift, scale)), [shift, scale] = adaLN_modulation(silu(c)); both linear
  layers zero-initialised (adaLN-Zero: the network starts at output 0)."""
  features: int

  @nn.compact
  def __call__(self, x: Array, c: Array) -> Array:
    dt = x.dtype
    mod = nn.Dense(2 * x.shape[-1], kernel_init=_zeros, name="adaLN_modulation")(nn.silu(c))
    shift, scale = jnp.split(mod.astype(dt), 2, axis=-1)
    h = modulate(_layer_norm("norm_final", dt)(x), shift, scale)
    return nn.Dense(self.features, kernel_init=_zeros, dtype=dt, name="linear")(h)


class DiT(nn.Module):
  """Diffusion Transformer: x (B, H, W, C) NHWC, c_noise (B,) -> (B, H, W, C_out).

  Called as `model.apply({'params': p}, x, c_noise, train=False, class_labels=None,
  augment_labels=None, c_noise_2=None, rngs={'dropout': key})` (rngs only for train=True with
  label dropout), the cmjax backbone convention. H = W = input_size, C = in_channels.

  Attributes:
    input_size: latent / image side H = W (divisible by patch_size).
    patch_size: side p of the square patches (1, 2, 4, 8): (H / p)^2 tokens.
    in_channels: C of the input.
    hidden_size, depth, num_heads, mlp_ratio: width D, number of DiT blocks, attention heads
      (dividing D), MLP width factor (`dit_config` gives the paper's S/B/L/XL).
    class_dropout_prob: probability of replacing an example's label by the null class in
      training (classifier-free guidance; 'dropout' rng stream); > 0 also adds the null class'
      row to the label table (DiT's LabelEmbedder). Unused when label_dim = 0.
    label_dim: number of classes, 0 = unconditional. class_labels are (B,) ints in
      [0, label_dim), or label_dim = the null class (the unconditional input of classifier-free
      guidance; needs class_dropout_prob > 0). None = the null class for every example (the
      same condition), or an error when the model has no null class.
    learn_sigma: DiT's variance output: C_out = 2 C (the first C channels are the prediction).
    time_conditions: 1 = c_noise only (c_noise_2 is ignored); 2 = also c_noise_2 (B,) through a
      second TimestepEmbedder, added into c (shortcut models' dt embedding; MeanFlow's r). Then
      c_noise_2 is required, except at init.
    null_class: give the label table its null-class row even with class_dropout_prob = 0, for an
      objective that drops labels itself (MeanFlow's guidance: meanflow.class_dropout_prob; the
      MeanFlow code's DiT always has the row, Gsunshine/meanflow models/models_dit.py).
    remat: recompute each DiT block's activations in the backward pass (jax.checkpoint through
      nn.remat) instead of storing them: less activation memory for about one more forward pass
      of compute; the parameters (names, shapes) and the outputs are the same.
  """
  input_size: int = 32
  patch_size: int = 2
  in_channels: int = 4
  hidden_size: int = 1152
  depth: int = 28
  num_heads: int = 16
  mlp_ratio: float = 4.0
  class_dropout_prob: float = 0.1
  label_dim: int = 0
  learn_sigma: bool = False
  time_conditions: int = 1
  null_class: bool = False
  remat: bool = False

  @property
  def out_channels(self) -> int:
    """C_out: 2 * in_channels with learn_sigma, else in_channels."""
    return self.in_channels * (2 if self.learn_sigma else 1)

  @property
  def has_null_class(self) -> bool:
    """Whether the label table has the null-class row (class_dropout_prob > 0 or null_class)."""
    return self.label_dim > 0 and (self.class_dropout_prob > 0 or self.null_class)

  def _check(self, x: Array) -> None:
    """One ValueError line per bad field or input."""
    if self.patch_size < 1 or self.input_size % self.patch_size:
      raise ValueError(f"input_size {self.input_size} must be a multiple of patch_size "
                       f"{self.patch_size} >= 1")
    if self.num_heads < 1 or self.hidden_size % self.num_heads:
      raise ValueError(f"num_heads {self.num_heads} must divide hidden_size {self.hidden_size}")
    if self.depth < 1 or self.in_channels < 1 or self.mlp_ratio <= 0:
      raise ValueError(f"need depth >= 1, in_channels >= 1, mlp_ratio > 0; got {self.depth}, "
                       f"{self.in_channels}, {self.mlp_ratio}")
    if not 0.0 <= self.class_dropout_prob <= 1.0 or self.label_dim < 0:
      raise ValueError(f"need class_dropout_prob in [0, 1] and label_dim >= 0, got "
                       f"{self.class_dropout_prob}, {self.label_dim}")
    if self.time_conditions not in (1, 2):
      raise ValueError(f"time_conditions must be 1 or 2, got {self.time_conditions}")
    want = (self.input_size, self.input_size, self.in_channels)
    if x.ndim != 4 or tuple(x.shape[1:]) != want:
      raise ValueError(f"x must be (B, {want[0]}, {want[1]}, {want[2]}) (input_size, "
                       f"in_channels), got {tuple(x.shape)}")

  def _labels(self, class_labels, batch: int) -> Optional[Array]:
    """class_labels checked -> (B,) int32 (None -> the null class), or None (label_dim = 0)."""
    if not self.label_dim:
      if class_labels is not None:
        raise ValueError("class_labels given but label_dim=0 (an unconditional model)")
      return None
    if class_labels is None:
      if not self.has_null_class:
        raise ValueError("class_labels=None needs a null class (class_dropout_prob > 0); "
                         f"this model has label_dim={self.label_dim} and no null class")
      return jnp.full((batch,), self.label_dim, jnp.int32)
    labels = jnp.asarray(class_labels)
    if labels.shape != (batch,) or not jnp.issubdtype(labels.dtype, jnp.integer):
      raise ValueError(f"class_labels must be ({batch},) ints, got {labels.shape} {labels.dtype}")
    return labels.astype(jnp.int32)

  @nn.compact
  def __call__(self, x: Array, c_noise: Array, train: bool = False,
               class_labels: Optional[Array] = None, augment_labels: Optional[Array] = None,
               c_noise_2: Optional[Array] = None) -> Array:
    """x (B, H, W, C), c_noise (B,) or scalar [, c_noise_2 (B,)] -> (B, H, W, C_out), x.dtype."""
    self._check(x)
    if augment_labels is not None:
      raise ValueError("augment_labels given but DiT takes no augmentation labels")
    batch, dt, p, d = x.shape[0], x.dtype, self.patch_size, self.hidden_size
    grid = self.input_size // p

    # Conditioning vector c (B, D), float32.
    c = TimestepEmbedder(d, name="t_embedder")(jnp.broadcast_to(
        jnp.asarray(c_noise, jnp.float32), (batch,)))
    if self.time_conditions == 2:
      if c_noise_2 is None:
        if not self.is_initializing():
          raise ValueError("time_conditions=2 needs c_noise_2 (B,)")
        c_noise_2 = jnp.zeros((batch,), jnp.float32)
      c = c + TimestepEmbedder(d, name="t2_embedder")(jnp.broadcast_to(
          jnp.asarray(c_noise_2, jnp.float32), (batch,)))
    labels = self._labels(class_labels, batch)
    if labels is not None:
      c = c + LabelEmbedder(self.label_dim, d, self.class_dropout_prob, self.null_class,
                            name="y_embedder")(
          labels, train)
    self.sow("intermediates", "conditioning", c)  # a no-op unless 'intermediates' is mutable

    # Tokens (B, N, D), N = grid^2, row-major.
    h = nn.Conv(d, (p, p), strides=(p, p), padding="VALID", kernel_init=_patch_init, dtype=dt,
                name="x_embedder")(x)
    h = h.reshape(batch, grid * grid, d)
    h = h + jnp.asarray(get_2d_sincos_pos_embed(d, grid), dt)[None]
    block = nn.remat(DiTBlock) if self.remat else DiTBlock
    for i in range(self.depth):
      h = block(d, self.num_heads, self.mlp_ratio, name=f"blocks_{i}")(h, c)

    h = FinalLayer(p * p * self.out_channels, name="final_layer")(h, c)

    # Unpatchify: (B, N, p * p * C_out) with (p, q, c) inner layout -> (B, H, W, C_out).
    h = h.reshape(batch, grid, grid, p, p, self.out_channels)
    h = jnp.einsum("nhwpqc->nhpwqc", h)
    return h.reshape(batch, grid * p, grid * p, self.out_channels)


def dit_config(name: str, **overrides) -> dict:
  """The paper's DiT-{S,B,L,XL}/{1,2,4,8} (Table 1) as DiT keyword arguments, e.g. 'XL/2' ->
  dict(hidden_size=1152, depth=28, num_heads=16, patch_size=2), updated by `overrides`
  (input_size, in_channels, label_dim, ...: the other fields keep DiT's class defaults)."""
  size, _, patch = name.partition("/")
  if size not in DIT_SIZES or patch not in ("1", "2", "4", "8"):
    raise ValueError(f"unknown DiT configuration {name!r}; known: {{S,B,L,XL}}/{{1,2,4,8}}")
  hidden, depth, heads = DIT_SIZES[size]
  kw = dict(hidden_size=hidden, depth=depth, num_heads=heads, patch_size=int(patch))
  fields = {f for f in DiT.__dataclass_fields__} - {"parent", "name"}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise ValueError(f"unknown DiT arguments {unknown}; known: {sorted(fields)}")
  return {**kw, **overrides}


def _torch_key(key: str) -> tuple[str, ...]:
  """A DiT state_dict key -> the path of its leaf in this port's params ('kernel' for weights)."""
  parts = key.split(".")
  rename = {("x_embedder", "proj"): ("x_embedder",), ("attn", "qkv"): ("qkv",),
            ("attn", "proj"): ("proj",), ("mlp", "fc1"): ("fc1",), ("mlp", "fc2"): ("fc2",),
            ("mlp", "0"): ("mlp_0",), ("mlp", "2"): ("mlp_2",),
            ("adaLN_modulation", "1"): ("adaLN_modulation",)}
  out, i = [], 0
  while i < len(parts):
    pair = tuple(parts[i:i + 2])
    if pair in rename:
      out += rename[pair]
      i += 2
    elif parts[i] == "blocks" and i + 1 < len(parts):
      out.append(f"blocks_{parts[i + 1]}")
      i += 2
    else:
      out.append(parts[i])
      i += 1
  if out[-1] == "weight":
    out[-1] = "embedding_table" if out[-2] == "embedding_table" else "kernel"
    if out[-1] == "embedding_table":
      out.pop(-2)
  return tuple(out)


def dit_params_from_torch(state_dict: dict) -> dict:
  """The authors' DiT `state_dict()` (name -> numpy array) -> this port's params (float32).

  Linear (out, in) -> Dense kernel (in, out); the patch Conv2d (D, C, p, p) -> (p, p, C, D);
  `pos_embed` (DiT's frozen sin-cos table) is checked against `get_2d_sincos_pos_embed` and
  dropped. A second time embedder named `t2_embedder.*` maps like `t_embedder.*`. Unknown names
  raise a ValueError; check the result's shapes against the model (e.g. with
  cmjax.param_files.checked_params on jax.eval_shape of model.init).
  """
  params: dict = {}
  for key, value in state_dict.items():
    a = np.asarray(value, dtype=np.float32)
    if key == "pos_embed":
      n, d = a.shape[-2:]
      ref = get_2d_sincos_pos_embed(d, int(round(math.sqrt(n))))
      if a.reshape(n, d).shape != ref.shape or not np.allclose(a.reshape(n, d), ref, atol=1e-5):
        raise ValueError(f"pos_embed {a.shape} is not DiT's fixed 2-D sin-cos embedding")
      continue
    path = _torch_key(key)
    if path[0] not in ("x_embedder", "t_embedder", "t2_embedder", "y_embedder",
                       "final_layer") and not path[0].startswith("blocks_"):
      raise ValueError(f"unknown DiT state_dict key {key!r}")
    if path[-1] == "kernel":
      a = a.transpose(2, 3, 1, 0) if a.ndim == 4 else a.T
    node = params
    for part in path[:-1]:
      node = node.setdefault(part, {})
    node[path[-1]] = a
  return params


BACKBONES = {"dit": DiT}  # config.model.name = 'dit' (discovered by cmjax.models)
