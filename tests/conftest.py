"""Test setup: 8 simulated CPU devices, fast-compiling XLA, persistent compilation cache.

Environment variables must be set before jax is imported anywhere.
"""
import os
import sys

_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
  _flags += " --xla_force_host_platform_device_count=8"
if "xla_backend_optimization_level" not in _flags:
  # Tests check numbers, not speed: compile faster. A smoke launch from a cold cache took 38.8 s
  # with the first flag alone and 23.6 s with all three (one core, 2026-12-02).
  _flags += (" --xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
             " --xla_llvm_disable_expensive_passes=true")
os.environ["XLA_FLAGS"] = _flags.strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # launch.py and configs/ live at the repo root

import jax  # noqa: E402

jax.config.update("jax_compilation_cache_dir",
                  os.environ.get("CMJAX_TEST_CACHE", os.path.join(ROOT, ".jax_cache")))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

import pytest  # noqa: E402

LONG = bool(os.environ.get("CMJAX_LONG_TESTS"))


def pytest_configure(config):
  """With -n N and no --dist given, xdist's 'worksteal' instead of 'load': idle workers take tests
  queued on a busy one (see the ordering below)."""
  if getattr(config.option, "dist", None) == "load" and not any(
      str(a).startswith("--dist") for a in config.invocation_params.args):
    config.option.dist = "worksteal"


def pytest_collection_modifyitems(config, items):
  """`@pytest.mark.long`: minutes of CPU each, or the same code path as a cheaper test at another
  size (docs/testing.md lists them). They are also `slow`, and run only with CMJAX_LONG_TESTS=1."""
  for item in items:
    if item.get_closest_marker("long"):
      item.add_marker(pytest.mark.slow)
      if not LONG:
        item.add_marker(pytest.mark.skip(reason="long: set CMJAX_LONG_TESTS=1 to run it"))
  # Longest first (stable within each group): the files of the longest slow tests (HEAVY, in
  # measured order: 30-100 s each on 2 cores), then the other slow tests, then the rest. With
  # xdist's worksteal (pytest_configure above) a worker runs its queue from the front and idle
  # workers take from the back, so the last tests to finish are short ones and both workers end
  # together (with the heavy files in alphabetical order, a 45 s 2-D training run was the last
  # test of a 13.5 min suite while the other worker idled).
  def rank(item):
    if not item.get_closest_marker("slow"):
      return len(HEAVY) + 1
    name = os.path.basename(str(item.fspath))
    return HEAVY.index(name) if name in HEAVY else len(HEAVY)
  items.sort(key=rank)


HEAVY = ("test_toy2d_methods.py", "test_inference_modes.py", "test_multihost.py", "test_fsdp.py",
         "test_paper_configs.py", "test_launch.py", "test_published_weights.py", "test_faults.py",
         "test_edm2_training.py")
