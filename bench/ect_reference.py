"""The authors' ECT train step in PyTorch, imported from a locuslab/ect checkout the user points to
(never copied here): `training.networks.ECMPrecond` around EDM's `SongUNet`, `training.loss.ECMLoss`,
RAdam, the gradient `nan_to_num` and the EMA `lerp` of `training/ct_training_loop.py`. Used by
bench/side_by_side.py, bench/profile_ops.py and bench/gpu_check.py."""
from __future__ import annotations

import os
import sys

DROPOUT = 0.2  # run_ecm.sh --dropout=0.2 [code: locuslab/ect]
EMA_BETA = 0.9999  # ct_train.py --ema_beta default [code: locuslab/ect]


def shim_cuda_rng(torch) -> None:
  """Points torch.cuda.get_rng_state / set_rng_state at the CPU generator (ECMLoss shares its
  two passes' dropout masks by restoring the CUDA RNG state; on CPU the masks come from the CPU
  generator, so restoring that one keeps the reference's semantics)."""
  torch.cuda.get_rng_state = lambda device="cuda": torch.get_rng_state()
  torch.cuda.set_rng_state = lambda new_state, device="cuda": torch.set_rng_state(new_state)


def import_reference(ect_repo: str):
  """(torch, ECMPrecond, ECMLoss, generator_fn) from a locuslab/ect checkout."""
  from cmjax.errors import ConfigError
  if not os.path.isfile(os.path.join(ect_repo, "training", "loss.py")):
    raise ConfigError(f"--ect_repo {ect_repo!r} is not a locuslab/ect checkout (no training/loss.py)")
  try:
    import torch
  except ImportError as e:
    raise ConfigError(f"the PyTorch reference needs torch in this environment ({e})") from None
  if ect_repo not in sys.path:
    sys.path.insert(0, os.path.abspath(ect_repo))
  from training.ct_training_loop import generator_fn
  from training.loss import ECMLoss
  from training.networks import ECMPrecond
  return torch, ECMPrecond, ECMLoss, generator_fn


class TorchSide:
  """The authors' ECT train step (or 1-step sampling) in PyTorch eager for one row (a
  `side_by_side.Row`: channels, mult, blocks, attn, batch, kind)."""

  def __init__(self, ect_repo: str, row, images_nhwc, threads: int = 0, device: str = "cpu",
               no_dropout: bool = False, dtype: str = "fp32"):
    import copy
    torch, ECMPrecond, ECMLoss, generator_fn = import_reference(ect_repo)
    self.torch, self.row, self.device, self.generator_fn = torch, row, device, generator_fn
    if threads:
      torch.set_num_threads(threads)
    if device == "cpu":
      shim_cuda_rng(torch)
    torch.manual_seed(0)
    # ct_train.py --arch=ddpmpp network kwargs [code: locuslab/ect], the row's widths.
    self.net = ECMPrecond(img_resolution=32, img_channels=3, label_dim=0,
                          use_fp16=(dtype == "fp16"), model_type="SongUNet",
                          embedding_type="positional", encoder_type="standard",
                          decoder_type="standard", channel_mult_noise=1, resample_filter=[1, 1],
                          model_channels=row.channels, channel_mult=list(row.mult),
                          num_blocks=row.blocks, attn_resolutions=list(row.attn),
                          dropout=0.0 if no_dropout else DROPOUT).to(device).train()
    self.params = int(sum(p.numel() for p in self.net.parameters()))
    self.ema = copy.deepcopy(self.net).eval().requires_grad_(False)
    self.loss_fn = ECMLoss(P_mean=-1.1, P_std=2.0, q=2, c=0.0, k=8.0, b=1.0, adj="sigmoid")
    self.loss_fn.update_schedule(0)
    self.opt = torch.optim.RAdam(self.net.parameters(), lr=1e-4, betas=[0.9, 0.999], eps=1e-8)
    self.images = torch.as_tensor(images_nhwc).permute(0, 3, 1, 2).contiguous().to(device)
    self.last_loss = float("nan")

  def _sync(self):
    if self.device != "cpu":
      self.torch.cuda.synchronize()

  def step(self) -> None:
    """One train step as in training/ct_training_loop.py (or one 1-step sampling batch)."""
    torch = self.torch
    if self.row.kind == "sample":
      with torch.no_grad():
        z = torch.randn([self.row.batch, 3, 32, 32], device=self.device)
        self.generator_fn(self.ema, z)
      self._sync()
      return
    self.opt.zero_grad(set_to_none=True)
    loss = self.loss_fn(net=self.net, images=self.images, labels=None)
    loss.mean().backward()
    for p in self.net.parameters():
      if p.grad is not None:
        torch.nan_to_num(p.grad, nan=0, posinf=1e5, neginf=-1e5, out=p.grad)
    self.opt.step()
    with torch.no_grad():
      for p_ema, p_net in zip(self.ema.parameters(), self.net.parameters()):
        p_ema.copy_(p_net.detach().lerp(p_ema, EMA_BETA))
    self.last_loss = loss.detach()
    self._sync()

  def loss(self) -> float:
    self.step()
    return float(self.last_loss.mean())
