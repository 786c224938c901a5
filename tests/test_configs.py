"""Every shipped config builds, passes validation, and names a method, model and data set we have."""
import glob
import importlib
import os

import pytest

from cmjax.config_validation import validate_config
from conftest import ROOT

# The CPU-scale configs (the paper configs are tested in tests/test_paper_configs.py).
CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                 if not p.endswith("_base.py") and os.path.basename(p).startswith(("digits_", "toy2d_")))


def test_there_is_a_toy_and_a_digits_config_per_method():
  for method in ("edm", "cd", "ct", "ict", "ect", "sct", "scd", "trigflow"):
    assert f"toy2d_{method}" in CONFIGS and f"digits_{method}" in CONFIGS, method


@pytest.mark.parametrize("name", CONFIGS)
def test_config_builds_and_validates(name):
  module = importlib.import_module(f"configs.{name}")
  variants = ["", "smoke"] if name.startswith("digits_") else ["", "checkerboard"]
  if name == "toy2d_cd_exact":  # the exact teacher exists for the 8 Gaussians only
    variants = [""]
  for variant in variants:
    c = module.get_config(variant)
    validate_config(c, 8)
    assert c.method == name.split("_")[1]
  with pytest.raises(ValueError, match="unknown variant"):
    module.get_config("nope")


@pytest.mark.parametrize("workdir,message", [("", "teacher_workdir is empty"),
                                             ("/nonexistent/teacher", "teacher checkpoint not found")])
def test_missing_teacher_is_one_clear_error(workdir, message):
  from cmjax.config_validation import ConfigError
  from cmjax.trainer import Run
  from configs import toy2d_cd, toy2d_scd

  for module, method in ((toy2d_cd, "cd"), (toy2d_scd, "scd")):
    c = module.get_config()
    c[method].teacher_workdir = workdir
    with pytest.raises(ConfigError, match=message) as err:
      Run(c)
    assert "\n" not in str(err.value)
