"""The `Family` protocol (see `cmjax.families`): defaults shared by every model family."""
from __future__ import annotations

import math
from typing import Callable

from cmjax.errors import ConfigError


class Family:
  """Base of the model families; subclasses set the class attributes and the methods below."""
  name: str = ""
  is_diffusion: bool = False
  spec_kinds: tuple = ()
  time_name: str = "noise levels"   # what sample.sigmas / eval.t_mid mean for this family
  num_times: int = 1                 # 2: the network also takes a second time (c_noise_2)

  def preconditioner(self, param) -> Callable:
    """precond(net, x (B, ...), t (B,)) -> the model's output, from config.param."""
    raise NotImplementedError

  def named_samplers(self, config) -> tuple:
    """((name, spec), ...) evaluated at the end of a run."""
    raise NotImplementedError

  def sampler_spec(self, config, levels=None) -> tuple:
    """The spec of `--mode sample` from config.sample (or explicit `levels`)."""
    raise NotImplementedError

  def make_sample_fn(self, spec: tuple, model_fn, param) -> Callable:
    """fn(params, z (B, ...), renoise_key, first_index) -> (B, ...) samples of `spec`."""
    raise NotImplementedError

  def consistency_fn(self, model_fn, param, ode_steps: int = 18) -> Callable:
    """fn(params, x (B, ...), sigma (B,)) -> the model's estimate of f*(x, sigma) (jit-able), x
    in EDM coordinates x = x0 + sigma z."""
    raise NotImplementedError

  def level_range(self, param) -> tuple:
    """(low, top): consistency sampling levels must lie in (low, top]."""
    raise NotImplementedError

  def check_config(self, config, need) -> None:
    """Family checks of config (eval.t_mid in range for consistency models)."""
    if not self.is_diffusion:
      low, top = self.level_range(config.param)
      t_mid = config.eval.t_mid
      need(low < t_mid < top, f"eval.t_mid {t_mid} must lie in ({low:g}, {top:g}) ({self.time_name} "
           f"of family {self.name})")


class ConsistencyFamily(Family):
  """Shared logic of families sampled in 1 or 2 consistency steps: the spec is (kind, levels)."""

  def named_samplers(self, config) -> tuple:
    top = self.level_range(config.param)[1]
    kind = self.spec_kinds[0]
    return (("1step", (kind, (float(top),))),
            ("2step", (kind, (float(top), float(config.eval.t_mid)))))

  def sampler_spec(self, config, levels=None) -> tuple:
    s = config.sample
    if s.sigmas is None:
      raise ConfigError("sample.sigmas must be a list of levels")
    levels = tuple(float(v) for v in (s.sigmas if levels is None else levels))
    low, top = self.level_range(config.param)
    levels = levels or (top,)
    if any(not (low < v <= top + 1e-9) for v in levels):
      raise ConfigError(f"sample.sigmas: {self.time_name} must lie in ({low:g}, {top:g}], got "
                        f"{list(levels)}")
    if any(b >= a for a, b in zip(levels, levels[1:])):
      raise ConfigError(f"sample.sigmas: {self.time_name} must decrease, got {list(levels)}")
    return (self.spec_kinds[0], levels)


class DiffusionFamily(Family):
  """Shared logic of families sampled by an ODE solver: the spec is (kind, steps[, solver])."""
  is_diffusion = True

  def ode_spec(self, config, steps: int) -> tuple:
    """The ODE spec with `steps` steps (the solver from config.eval where the family has one)."""
    raise NotImplementedError

  def named_samplers(self, config) -> tuple:
    return (("ode", self.ode_spec(config, int(config.eval.ode_steps))),)

  def sampler_spec(self, config, levels=None) -> tuple:
    s = config.sample
    if s.sigmas or levels:
      raise ConfigError(f"sample.sigmas is for consistency models; method '{config.method}' is a "
                        f"diffusion model (set sample.ode_steps)")
    steps = int(s.ode_steps) or int(config.eval.ode_steps)
    if steps < 1:
      raise ConfigError(f"sample.ode_steps must be >= 1, got {steps}")
    return self.ode_spec(config, steps)

  def level_range(self, param) -> tuple:
    return (float(param.sigma_min), float(param.sigma_max))

  def check_config(self, config, need) -> None:
    need(config.eval.ode_steps >= 1, f"eval.ode_steps must be >= 1, got {config.eval.ode_steps}")


def half_pi() -> float:
  return math.pi / 2
