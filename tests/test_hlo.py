"""The compiled data-parallel step does one (combined) gradient all-reduce per step."""
import re
import pytest

import jax

from cmjax.trainer import Run


@pytest.mark.slow
def test_one_gradient_all_reduce_per_step():
  from configs import digits_ect
  run = Run(digits_ect.get_config("smoke"))
  compiled, _, _ = run.compile_train_step()
  lines = [l for l in compiled.as_text().splitlines()
           if re.search(r"= .*\ball-reduce(-start)?\(", l)]
  assert len(lines) == 1, [l[:200] for l in lines]
  result_types = re.split(r"\ball-reduce(?:-start)?\(", lines[0])[0]
  n_arrays = len(re.findall(r"f32\[", result_types))
  n_params = len(jax.tree.leaves(run.abstract_state.params))
  # Every gradient travels in it (plus the few scalar metrics that are averaged).
  assert n_params <= n_arrays <= n_params + 16, (n_arrays, n_params)
