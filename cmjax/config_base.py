"""Shared defaults (and the schema) of every cmjax config: configs/*.py import this and change fields.

Field                    Meaning
---------------------------------------------------------------------------------------------
seed                     root PRNG seed: init, data order, training and sampling keys derive from it
method                   objective name (cmjax.objectives.OBJECTIVES)
data.name                'digits' (embedded sklearn digits, 8x8x1, 10 classes), 'toy2d_gmm8' or
                         'toy2d_checkerboard' (2-D distributions with exact metrics), 'cifar10' (TFDS
                         cifar10, 32x32x3, 10 classes), 'imagenet64' (TFDS imagenet_resized/64x64,
                         1000 classes), 'folder' (PNG/JPEG files under data.path, no labels) or
                         'latent' (SD-VAE latents written by --mode encode under data.path,
                         (resolution/8, resolution/8, 4); docs/latent.md)
data.data_dir            TFDS data_dir of cifar10 / imagenet64 ('' = TFDS's default)
data.path                'folder': the directory of images (searched recursively); 'latent': the
                         latent data set's directory (--mode encode writes it there)
data.resolution          'folder': images are centre-cropped to a square and resized to this side;
                         'latent': the image side the latents were encoded at (256 -> 32x32x4)
data.vae_weights         'latent': the VAE .npz (scripts/convert_sd_vae.py, its .json beside it) that
                         --mode encode encodes with and sampling decodes with (grids, FID)
data.latent_sample       'latent': train on a posterior sample (mean + std * eps) * 0.18215 (the
                         MeanFlow code's choice) instead of the posterior mean
data.random_flip         flip each training image horizontally with probability 1/2
data.augment             EDM's non-leaky augmentation (cmjax/data/augment.py) with this probability p
                         (0: off); the network gets the augmentation labels (model.augment_dim)
data.augment_preset      its transforms: 'edm_cifar10' (EDM's --augment, augment_dim 9) or
                         'meanflow_cifar10' (py-meanflow's, augment_dim 6)
data.read_threads        grain threads reading and decoding records (TFDS / folder)
data.prefetch            batches read ahead of the train step (0: read in the loop)
model.*                  backbone (cmjax.models.MODELS): its name and exactly its constructor arguments,
                         from `cmjax.models.model_config(name, **overrides)` ('unet' by default;
                         'mlp'; 'song_unet': EDM's DDPM++/NCSN++; 'adm': ADM as in EDM; see each
                         module's class docstring). A field the named network does not take is an
                         error. model.label_dim > 0 makes the model class-conditional: the data's
                         labels are fed to it in training and sampling draws classes
                         (sample.class_label)
model.remat              'song_unet', 'adm', 'edm2', 'dit': recompute each block's activations in the
                         backward pass (less memory, ~one more forward); a resumed run may change it
param.sigma_data         data std sd in the preconditioning (0.5 for pixels in [-1, 1])
param.sigma_min/max      boundary time eps (f(x, eps) = x) and the largest noise level T
param.boundary_shift     consistency methods in EDM time: True = c_skip/c_out shifted by sigma_min so
                         f(x, sigma_min) = x exactly (CM App. C; ECT's ECMPrecond); False = EDM's
                         unshifted preconditioning, as ECT on EDM2 (locuslab/ect imgnet branch: EDM2's
                         Precond; c_skip(sigma_min) = 1 - 1.6e-5 at sigma_data 0.5)
<method>.*               the objective's hyperparameters, one section per method (cmjax.objectives
                         .OBJECTIVES), derived from the objective's dataclass defaults plus its
                         config-only SETUP_FIELDS (see each class in cmjax/objectives for meanings)
cd/scd.teacher_workdir   the workdir of the teacher run (an 'edm' run for CD, a 'trigflow' run for
                         sCD); a missing or mismatched teacher stops the launch with one line
cd.teacher_file          CD: a published EDM network pickle as the teacher instead of a run (its own
                         VP/VE/EDM preconditioning, as recorded in the file)
cd/scd.init_from_teacher start the student from the teacher's EMA weights (same backbone needed)
cd.exact_teacher         CD-exact: the teacher is the exact denoiser of toy2d_gmm8 (no workdir)
cd/ct.distance           'l2_squared', 'l2', 'l1', 'pseudo_huber' (with c) or 'lpips' (then
                         lpips_weights = an .npz from scripts/convert_lpips_weights.py and
                         lpips_resize = the side inputs are resized to, 224 as in the CM code)
optim.name               'radam', 'adam' or 'muon'; lr, b1, b2, eps, warmup_steps, grad_clip (<=0 off),
                         weight_decay (decoupled, 0 off) are honoured for all; 'muon' orthogonalises
                         the momentum (muon_beta) of matrices and convolution kernels, AdamW the rest
optim.lr_decay           'constant' (after the warm-up), 'cosine' (to 0 at the last step) or 'inv_sqrt'
                         (EDM2's lr / sqrt(max(step / optim.lr_decay_steps, 1)), its ref_batches)
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
train.init_from          start from the network in this published weights file (an EDM/ECT network pickle:
                         its EMA copy, as ECT's --transfer does; the backbone must match config.model,
                         dropout may differ; docs/weights.md); '' = random init
train.precision          'fp32' or 'bf16' (mixed precision: fp32 master parameters, optimiser and
                         EMA; the backbone computes in bfloat16; preconditioning and losses in fp32)
train.grad_accum         micro-batches per step (gradients averaged; the update equals the one of the
                         whole batch). batch_size / grad_accum must divide over the devices
train.skip_nonfinite     a non-finite loss/gradient skips the update and is counted (default: stop)
train.force_lock         take over WORKDIR/.lock even when another live launch holds it (one writer per
                         workdir: a second launch on the same workdir stops with one line)
train.preempt_check_every  several processes: agree on a preemption signal every this many steps (one
                         small all-gather then; one process checks every step without a collective)
train.profile_steps      'A:B': write a jax.profiler trace of steps A..B-1 to WORKDIR/profile
                         (TensorBoard's profile plugin or Perfetto read it); '' = none
train.compile_cache      JAX's persistent compilation cache for runs: 'auto' (~/.cache/cmjax/xla, or
                         $CMJAX_COMPILE_CACHE), a directory, or '' (off); a resume then skips the
                         recompile (unless JAX's cache is already configured, e.g. by the tests)
train.ema_warmup         EMA decay min(ema_rate, (1+step)/(10+step)) (for runs from scratch)
train.log_every          steps between TensorBoard scalar writes
train.checkpoint_every   steps between checkpoints (one is also written at the end)
train.keep_checkpoints   how many checkpoints to keep
train.sample_every       steps between PNG grids of EMA samples (0: only at the end)
eval.at_end              evaluate and write the sample grids when training ends (False: summary.json
                         has no quality metrics; measure them later with --mode eval)
eval.num_samples         samples for digits-FD (>= 1000)
eval.batch_size          sampling batch size
eval.t_mid               second noise level of 2-step sampling (TrigFlow time for sct/scd)
eval.ode_steps           diffusion models (edm, trigflow) are sampled with this many ODE steps
eval.ode_solver          'heun' or 'euler' (edm)
eval.grid_rows           the PNG grids show grid_rows x grid_rows samples
eval.checkpoint/params   --mode eval: the checkpoint (-1 = newest) and 'ema' or 'raw' parameters
eval.weights, sample.weights  --mode eval / sample on a published network file instead of a checkpoint
                         (an EDM/ECT pickle; its own preconditioning; config.method must be of its
                         family: 'edm' for EDM/VP/VE denoisers, a consistency method for ECT's ECMPrecond)
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
encode.*                 --mode encode (writes the latent data set data.path from images): source
                         ('folder': the images under encode.path, labels = sorted sub-folder names
                         when encode.labels='subfolders' (ImageNet's train/ layout), else none;
                         'tfds': TFDS data set encode.tfds_name from encode.data_dir), batch_size
                         (images encoded at a time), shard_size (records per array_record shard)
edit.*                   --mode edit: task ('inpaint', 'colorize', 'superres', 'interpolate',
                         'sdedit'), inputs ('0:16' or '3,5,7' = held-out indices, or comma-separated
                         image files), mask (inpaint: 'bottom', 'top', 'left', 'right', 'center',
                         'checker' = the MISSING region), factor (superres), sigmas (decreasing
                         noise levels of Alg. 4; sdedit starts at sigmas[0]), corrupt_std (sdedit:
                         Gaussian noise added to the inputs), interp_steps, checkpoint, params, seed
"""
from __future__ import annotations

import ml_collections

from cmjax.models import model_config
from cmjax.objectives import OBJECTIVES, objective_fields

# Sections that never change what a run trains: a resumed run (and every inference mode) may set
# them freely. Everything else must match the checkpoint's config, except RESUMABLE_TRAIN_FIELDS.
RESUMABLE_SECTIONS = ("eval", "sample", "edit", "encode")
# train.* fields that set the run's length and reporting, not what one step computes.
RESUMABLE_TRAIN_FIELDS = ("num_steps", "duration_kimg", "sharding", "log_every", "checkpoint_every",
                          "keep_checkpoints", "sample_every", "force_lock", "preempt_check_every",
                          "profile_steps", "compile_cache")


# model.* fields that change memory, not the parameters or what a step computes.
RESUMABLE_MODEL_FIELDS = ("remat",)


def is_resumable(key: str) -> bool:
  """Whether flattened config key `key` ('section.field') may differ from a checkpoint's config."""
  section, _, field = key.partition(".")
  return (section in RESUMABLE_SECTIONS or (section == "train" and field in RESUMABLE_TRAIN_FIELDS)
          or (section == "model" and field in RESUMABLE_MODEL_FIELDS))


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.method = "ect"
  c.data = ml_collections.ConfigDict(dict(
      name="digits", data_dir="", path="", resolution=0, random_flip=False, read_threads=8,
      prefetch=2, augment=0.0, augment_preset="edm_cifar10", vae_weights="", latent_sample=True))
  c.model = model_config("unet", channels=32)
  c.param = ml_collections.ConfigDict(dict(sigma_data=0.5, sigma_min=0.002, sigma_max=80.0,
                                           boundary_shift=True))
  for method in OBJECTIVES:  # one section per objective, from its dataclass defaults
    c[method] = ml_collections.ConfigDict(objective_fields(method))
  c.optim = ml_collections.ConfigDict(dict(
      name="radam", lr=1e-4, b1=0.9, b2=0.999, eps=1e-8, warmup_steps=0, warmup_kimg=0.0, grad_clip=0.0,
      weight_decay=0.0, muon_beta=0.95, lr_decay="constant", lr_decay_steps=0))
  c.train = ml_collections.ConfigDict(dict(
      sharding="data", batch_size=128, num_steps=200_000, duration_kimg=0.0, ema_rate=0.9999,
      ema_halflife_kimg=0.0, ema_rampup_ratio=0.0, ema_warmup=False, init_workdir="", init_from="", precision="fp32", grad_accum=1,
      skip_nonfinite=False, force_lock=False, preempt_check_every=10, profile_steps="",
      compile_cache="auto", log_every=50, checkpoint_every=1000, keep_checkpoints=3,
      sample_every=0))
  c.eval = ml_collections.ConfigDict(dict(
      at_end=True, num_samples=2048, batch_size=512, t_mid=0.821, grid_rows=10, ode_steps=18, ode_solver="heun",
      checkpoint=-1, params="ema", weights="", pr_k=3, fid_weights="", fid_reference="", fid_num_samples=50_000))
  c.sample = ml_collections.ConfigDict(dict(
      checkpoint=-1, params="ema", weights="", sigmas=(), ode_steps=0, num=64, seed=0, tag="", class_label=-1,
      search_t_mid=False, search_lo=0.1, search_hi=10.0, search_iters=4, search_num=1024))
  c.encode = ml_collections.ConfigDict(dict(
      source="folder", path="", labels="subfolders", tfds_name="", data_dir="", batch_size=64,
      shard_size=10_000))
  c.edit = ml_collections.ConfigDict(dict(
      task="inpaint", inputs="0:16", mask="bottom", factor=2,
      sigmas=(80.0, 10.0, 5.0, 2.0, 1.0, 0.5), corrupt_std=0.5, interp_steps=8, checkpoint=-1,
      params="ema", seed=0))
  return c
