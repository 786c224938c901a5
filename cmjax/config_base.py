"""Shared defaults (and the schema) of every cmjax config: configs/*.py import this and change fields.

Field                    Meaning
---------------------------------------------------------------------------------------------
seed                     root PRNG seed: init, data order, training and sampling keys derive from it
method                   objective name (cmjax.objectives.OBJECTIVES)
data.name                'digits' (embedded sklearn digits, 8x8x1, 10 classes), 'toy2d_gmm8' or
                         'toy2d_checkerboard' (2-D distributions with exact metrics), 'cifar10' (TFDS
                         cifar10, 32x32x3, 10 classes), 'imagenet64' (TFDS imagenet_resized/64x64,
                         1000 classes) or 'folder' (PNG/JPEG files under data.path, no labels)
data.data_dir            TFDS data_dir of cifar10 / imagenet64 ('' = TFDS's default)
data.path                'folder': the directory of images (searched recursively)
data.resolution          'folder': images are centre-cropped to a square and resized to this side
data.random_flip         flip each training image horizontally with probability 1/2
data.read_threads        grain threads reading and decoding records (TFDS / folder)
data.prefetch            batches read ahead of the train step (0: read in the loop)
model.*                  backbone (cmjax.models.MODELS): name and the constructor arguments of every
                         model ('unet': channels...groups; 'mlp': hidden, depth, dropout, time_scale;
                         'song_unet': EDM's DDPM++/NCSN++, model_channels...noise_scale, see
                         cmjax/models/song_unet.py; 'adm': ADM of Dhariwal & Nichol as in EDM,
                         model_channels...dropout_max_res, see cmjax/models/adm_unet.py); changing a
                         field the named model does not take is an error. model.label_dim > 0 makes
                         the model class-conditional: the data's labels are fed to it in training
                         and sampling draws classes (sample.class_label)
param.sigma_data         data std sd in the preconditioning (0.5 for pixels in [-1, 1])
param.sigma_min/max      boundary time eps (f(x, eps) = x) and the largest noise level T
<method>.*               the objective's hyperparameters, one section per method: edm, cd, ct, ict,
                         ect, sct, scd, trigflow (see each class in cmjax/objectives for meanings)
cd/scd.teacher_workdir   the workdir of the teacher run (an 'edm' run for CD, a 'trigflow' run for
                         sCD); a missing or mismatched teacher stops the launch with one line
cd/scd.init_from_teacher start the student from the teacher's EMA weights (same backbone needed)
cd.exact_teacher         CD-exact: the teacher is the exact denoiser of toy2d_gmm8 (no workdir)
cd/ct.distance           'l2_squared', 'l2', 'l1', 'pseudo_huber' (with c) or 'lpips' (then
                         lpips_weights = an .npz from scripts/convert_lpips_weights.py and
                         lpips_resize = the side inputs are resized to, 224 as in the CM code)
optim.name               'radam' or 'adam'; lr, b1, b2, eps, warmup_steps, grad_clip (<=0 off),
                         weight_decay (decoupled, 0 off) are honoured for both
optim.warmup_kimg        if > 0: the linear lr warm-up in thousands of images (EDM's lr ramp-up, 10,000
                         kimg on CIFAR-10); replaces warmup_steps
train.sharding           'data' (replicated parameters) or 'fsdp' (parameters, EMA and optimiser
                         state split over the devices); the batch is always split
train.batch_size         global batch (split over all devices; must divide evenly)
train.num_steps          optimiser steps in total (a resumed run stops here)
train.duration_kimg      if > 0: the run length in thousands of images seen; it sets train.num_steps =
                         ceil(duration_kimg * 1000 / batch_size), so it survives a batch-size change
train.ema_rate           EMA decay of the sampling parameters
train.ema_halflife_kimg  if > 0: the EMA decay per step is 0.5^(batch_size / (1000 * halflife)) (EDM's
                         half-life in images, independent of the batch size); replaces ema_rate
train.ema_rampup_ratio   with ema_halflife_kimg: the half-life is at most this fraction of the images
                         seen so far (EDM's ramp-up, 0.05; 0 = no ramp-up)
train.init_workdir       start from the EMA parameters of the run in this workdir (same backbone, data
                         and sigma_data; any method: ECT tunes a pretrained EDM run); '' = random init
train.precision          'fp32' or 'bf16' (mixed precision: fp32 master parameters, optimiser and
                         EMA; the backbone computes in bfloat16; preconditioning and losses in fp32)
train.grad_accum         micro-batches per step (gradients averaged; the update equals the one of the
                         whole batch). batch_size / grad_accum must divide over the devices
train.skip_nonfinite     a non-finite loss/gradient skips the update and is counted (default: stop)
train.ema_warmup         EMA decay min(ema_rate, (1+step)/(10+step)) (for runs from scratch)
train.log_every          steps between TensorBoard scalar writes
train.checkpoint_every   steps between checkpoints (one is also written at the end)
train.keep_checkpoints   how many checkpoints to keep
train.sample_every       steps between PNG grids of EMA samples (0: only at the end)
eval.num_samples         samples for digits-FD (>= 1000)
eval.batch_size          sampling batch size
eval.t_mid               second noise level of 2-step sampling (TrigFlow time for sct/scd)
eval.ode_steps           diffusion models (edm, trigflow) are sampled with this many ODE steps
eval.ode_solver          'heun' or 'euler' (edm)
eval.grid_rows           the PNG grids show grid_rows x grid_rows samples
eval.checkpoint/params   --mode eval: the checkpoint (-1 = newest) and 'ema' or 'raw' parameters
eval.pr_k                --mode eval: k of improved precision/recall (3, as in EDM/ECT)
eval.fid_weights         --mode eval: Inception .npz (scripts/convert_inception_weights.py); '' = no FID
eval.fid_reference       --mode eval: reference statistics .npz (computed from the training images and
                         cached there when missing)
eval.fid_num_samples     --mode eval: samples for FID (50,000 as in the papers)
sample.*                 --mode sample (a trained workdir): checkpoint (-1 = newest), params ('ema' or
                         'raw'), sigmas (decreasing noise levels, TrigFlow times for sct/scd; () = 1
                         step from sigma_max), ode_steps (diffusion models; 0 = eval.ode_steps),
                         num samples, seed, tag (output name), class_label (class-conditional
                         models: -1 = a random class per sample, else this class); search_t_mid: ternary search of the
                         2-step middle level in [search_lo, search_hi] (search_iters rounds,
                         search_num samples per point, scored by digits-FD or SWD)
edit.*                   --mode edit: task ('inpaint', 'colorize', 'superres', 'interpolate',
                         'sdedit'), inputs ('0:16' or '3,5,7' = held-out indices, or comma-separated
                         image files), mask (inpaint: 'bottom', 'top', 'left', 'right', 'center',
                         'checker' = the MISSING region), factor (superres), sigmas (decreasing
                         noise levels of Alg. 4; sdedit starts at sigmas[0]), corrupt_std (sdedit:
                         Gaussian noise added to the inputs), interp_steps, checkpoint, params, seed
"""
from __future__ import annotations

import ml_collections

# Fields only the inference modes read: they may differ from the checkpoint's config.
INFERENCE_ONLY_FIELDS = tuple(
    [f"sample.{k}" for k in ("checkpoint", "params", "sigmas", "ode_steps", "num", "seed", "tag",
                             "class_label", "search_t_mid", "search_lo", "search_hi", "search_iters", "search_num")]
    + [f"edit.{k}" for k in ("task", "inputs", "mask", "factor", "sigmas", "corrupt_std",
                             "interp_steps", "checkpoint", "params", "seed")]
    + [f"eval.{k}" for k in ("checkpoint", "params", "pr_k", "fid_weights", "fid_reference",
                             "fid_num_samples")])


# Fields a resumed run may change (run length and reporting); all others must match
# the checkpoint's config.
RESUMABLE_FIELDS = ("train.num_steps", "train.duration_kimg", "train.sharding", "train.log_every", "train.checkpoint_every",
                    "train.keep_checkpoints", "train.sample_every", "eval.num_samples",
                    "eval.batch_size", "eval.grid_rows", "eval.t_mid",
                    "eval.ode_steps", "eval.ode_solver") + INFERENCE_ONLY_FIELDS


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.method = "ect"
  c.data = ml_collections.ConfigDict(dict(
      name="digits", data_dir="", path="", resolution=0, random_flip=False, read_threads=8,
      prefetch=2))
  c.model = ml_collections.ConfigDict(dict(
      name="unet", channels=32, channel_mult=(1, 2), num_res_blocks=2, dropout=0.1,
      time_scale=1000.0, groups=8, hidden=256, depth=4,
      # song_unet (DDPM++ / NCSN++ of EDM; set channel_mult and dropout for it explicitly)
      out_channels=0, label_dim=0, augment_dim=0, model_channels=128, channel_mult_emb=4,
      num_blocks=4, attn_resolutions=(16,), label_dropout=0.0, embedding_type="positional",
      channel_mult_noise=1, encoder_type="standard", decoder_type="standard",
      resample_filter=(1, 1), fourier_scale=16.0, fourier_seed=0, noise_scale=1.0,
      # adm (also model_channels, channel_mult, channel_mult_emb, num_blocks, attn_resolutions,
      # dropout, label_dim, augment_dim, label_dropout, out_channels)
      dropout_max_res=0))
  c.param = ml_collections.ConfigDict(dict(sigma_data=0.5, sigma_min=0.002, sigma_max=80.0))
  c.ect = ml_collections.ConfigDict(dict(
      p_mean=-1.1, p_std=2.0, q=2.0, stage_steps=25_000, initial_exponent=1, k=8.0, b=1.0, c=0.0,
      weighting="inv_dt"))
  c.edm = ml_collections.ConfigDict(dict(p_mean=-1.2, p_std=1.2))
  c.cd = ml_collections.ConfigDict(dict(
      num_scales=18, solver="heun", mu=0.0, distance="l2_squared", c=0.0, lpips_weights="",
      lpips_resize=224, rho=7.0,
      teacher_workdir="", init_from_teacher=True, exact_teacher=False))
  c.ct = ml_collections.ConfigDict(dict(
      s0=2, s1=150, total_steps=800_000, mu0=0.9, mu_divisor="official", distance="l2_squared",
      c=0.0, lpips_weights="", lpips_resize=224, rho=7.0))
  c.ict = ml_collections.ConfigDict(dict(
      s0=10, s1=1280, total_steps=400_000, p_mean=-1.1, p_std=2.0, c_per_sqrt_dim=0.00054, rho=7.0))
  scm = dict(p_mean=-1.0, p_std=1.4, tangent_warmup_steps=10_000, tangent_norm_c=0.1,
             adaptive_weight=True, t_min=1e-4)
  c.sct = ml_collections.ConfigDict(scm)
  c.scd = ml_collections.ConfigDict(dict(scm, teacher_workdir="", init_from_teacher=True))
  c.trigflow = ml_collections.ConfigDict(dict(p_mean=-1.0, p_std=1.4, adaptive_weight=True))
  c.optim = ml_collections.ConfigDict(dict(
      name="radam", lr=1e-4, b1=0.9, b2=0.999, eps=1e-8, warmup_steps=0, warmup_kimg=0.0, grad_clip=0.0,
      weight_decay=0.0))
  c.train = ml_collections.ConfigDict(dict(
      sharding="data", batch_size=128, num_steps=200_000, duration_kimg=0.0, ema_rate=0.9999,
      ema_halflife_kimg=0.0, ema_rampup_ratio=0.0, ema_warmup=False, init_workdir="", precision="fp32", grad_accum=1,
      skip_nonfinite=False, log_every=50, checkpoint_every=1000, keep_checkpoints=3,
      sample_every=0))
  c.eval = ml_collections.ConfigDict(dict(
      num_samples=2048, batch_size=512, t_mid=0.821, grid_rows=10, ode_steps=18, ode_solver="heun",
      checkpoint=-1, params="ema", pr_k=3, fid_weights="", fid_reference="", fid_num_samples=50_000))
  c.sample = ml_collections.ConfigDict(dict(
      checkpoint=-1, params="ema", sigmas=(), ode_steps=0, num=64, seed=0, tag="", class_label=-1,
      search_t_mid=False, search_lo=0.1, search_hi=10.0, search_iters=4, search_num=1024))
  c.edit = ml_collections.ConfigDict(dict(
      task="inpaint", inputs="0:16", mask="bottom", factor=2,
      sigmas=(80.0, 10.0, 5.0, 2.0, 1.0, 0.5), corrupt_std=0.5, interp_steps=8, checkpoint=-1,
      params="ema", seed=0))
  return c
