"""Tests of the benchmark scripts bench/side_by_side.py, bench/profile_ops.py and
bench/gpu_check.{sh,py}, without torch.

The timings themselves are never tested (they are benchmarks). Checked here: the rows of the
side-by-side benchmark build the networks they claim (the 'full' row is EDM's DDPM++ with its
exact 55,732,739 parameters [EDM paper / NVlabs/edm; cmjax/models/song_unet.py docstring], the
'small' row is the cifar10_ect:smoke net), bad rows/variants/threads raise one-line ConfigErrors,
the statistics, MFU and chip-peak helpers compute the right numbers, the CUDA RNG shim points at
the CPU generator (on a stand-in module), and `bench/gpu_check.sh --dry` runs every cmjax row on
CPU, skips the torch row when torch is absent saying why, and writes the JSON it prints (slow);
profile_ops finds a network's convolutions and norms in compiled HLO. No frozen assets.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import types

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(name: str):
  spec = importlib.util.spec_from_file_location(f"bench_{name}", os.path.join(ROOT, "bench", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # dataclasses look their module up
  spec.loader.exec_module(module)
  return module


sbs = _load("side_by_side")
gpu = _load("gpu_check")


def _param_count(row) -> int:
  import jax
  import numpy as np
  from cmjax.builders import build
  import dataclasses
  built = build(sbs.cmjax_config(dataclasses.replace(row, batch=8)))  # tests run on 8 devices
  state = built.abstract_state()
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(state.params)))


def test_full_row_is_ddpmpp_and_small_row_is_the_smoke_net():
  assert _param_count(sbs.ROWS["full"]) == 55_732_739  # EDM's DDPM++ count, exactly
  smoke = sbs.ect_config_module().get_config("smoke")
  small = sbs.cmjax_config(sbs.ROWS["small"])
  for field in ("model_channels", "num_blocks", "dropout"):
    assert small.model[field] == smoke.model[field], field
  for field in ("channel_mult", "attn_resolutions"):
    assert tuple(small.model[field]) == tuple(smoke.model[field]), field
  assert small.train.batch_size == 8 and small.model.dropout == 0.2
  assert small.optim.name == "radam" and small.train.ema_rate == 0.9999
  assert sbs.cmjax_config(sbs.ROWS["wide"]).model.num_blocks == 2
  assert sbs.cmjax_config(sbs.ROWS["mid"], no_dropout=True).model.dropout == 0.0


def test_bad_rows_variants_and_threads_raise_one_line_config_errors():
  from cmjax.errors import ConfigError
  with pytest.raises(ConfigError, match="unknown row 'huge'"):
    sbs.parse_list("small,huge", tuple(sbs.ROWS), "row")
  with pytest.raises(ConfigError, match="unknown variant 'fast'"):
    sbs.parse_list("rbg,fast", sbs.VARIANTS, "variant")
  assert sbs.parse_list("small,,full", tuple(sbs.ROWS), "row") == ["small", "full"]
  with pytest.raises(ConfigError, match="--threads must be in 1.."):
    sbs.pin_threads(0)
  with pytest.raises(ConfigError, match="not a locuslab/ect checkout"):
    sbs.import_reference(ROOT)
  with pytest.raises(ConfigError, match="unknown row 'x'"):
    gpu.main(["--dry", "--rows", "x"])


def test_stats_mfu_and_chip_peak():
  s = sbs.stats_ms([0.010, 0.030, 0.020, 0.050])
  assert s == {"min_ms": 10.0, "median_ms": 25.0, "n": 4}
  assert gpu.chip_peak("NVIDIA H100 80GB HBM3") == 989e12
  assert gpu.chip_peak("NVIDIA H200") == 989e12
  assert gpu.chip_peak("cpu") is None
  # 494.5 TFLOP in one second on a 989 TFLOP/s chip: half the peak.
  assert gpu.mfu(494.5e12, 1.0, 989e12) == 0.5
  assert gpu.mfu(1e12, 0.5, 989e12) == round(2e12 / 989e12, 4)
  assert gpu.mfu(1e12, 1.0, None) is None and gpu.mfu(0.0, 1.0, 989e12) is None


def test_markdown_table_lists_each_row():
  header = {"threads": 1, "machine": {"cpu": "X", "cores": 2, "loadavg": [3.0, 0, 0]},
            "jax": "j", "torch": "t"}
  side = {"min_ms": 1.0, "median_ms": 2.0, "busy_threads": 1, "cpu_ms": 2.0}
  r = {"row": "small", "batch": 8, "params": 189347, "variants": ["rbg"], "cmjax": side,
       "torch": {**side, "median_ms": 3.0}, "speed_ratio_cmjax_over_torch": 1.5,
       "cpu_time_ratio_cmjax_over_torch": 1.0}
  table = sbs.markdown_table([r], header)
  assert "| small | 8 | 189,347 | rbg | 1.0 / 2.0 | 1.0 / 3.0 | 1.5 |" in table


def test_cuda_rng_shim_uses_the_cpu_generator():
  calls = []
  fake = types.SimpleNamespace(get_rng_state=lambda: "cpu-state",
                               set_rng_state=lambda s: calls.append(s),
                               cuda=types.SimpleNamespace(get_rng_state=None, set_rng_state=None))
  sbs.shim_cuda_rng(fake)
  assert fake.cuda.get_rng_state() == "cpu-state"
  fake.cuda.set_rng_state("saved")
  assert calls == ["saved"]


def test_thread_meter_counts_this_thread():
  meter = sbs.ThreadMeter()

  def spin():
    x = 0
    for i in range(2_000_000):
      x += i
  meter.time(spin)
  s = meter.summary()
  assert s["busy_threads"] >= 1 and s["cpu_ms"] > 0 and meter.calls == 1


@pytest.mark.long  # minutes on a 2-core CPU
def test_gpu_check_dry_runs_every_row_on_cpu(tmp_path):
  out = tmp_path / "dry.json"
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device, not 8
  env.update(PYTHON=sys.executable, JAX_PLATFORMS="cpu",
             JAX_COMPILATION_CACHE_DIR=os.environ.get("CMJAX_TEST_CACHE",
                                                      os.path.join(ROOT, ".jax_cache")),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             GPU_CHECK_TIMEOUT="1500")  # < 2 min on 2 free cores; far more on a shared machine
  proc = subprocess.run(["bash", os.path.join(ROOT, "bench", "gpu_check.sh"), "--dry",
                         "--json", str(out)], env=env, capture_output=True, text=True, timeout=1600)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
  result = json.loads(out.read_text())
  rows = result["rows"]
  assert result["dry"] and result["platform"] == "cpu" and result["peak_bf16_flops"] is None
  for name in ("ect_fp32", "ect_bf16", "adm_bf16"):
    r = rows[name]
    assert r["batch"] == 8 and r["ms_per_step"] > 0 and r["xla_flops_per_step"] > 0
    assert r["mfu_vs_bf16_peak"] is None  # no peak known for a CPU
    assert r["loss"] == r["loss"]  # finite, not NaN
  assert rows["ect_fp32"]["params"] == rows["ect_bf16"]["params"] == 189_347
  assert rows["ect_bf16"]["precision"] == "bf16"
  assert rows["sample_1step"]["finite"] and rows["sample_1step"]["img_per_s"] > 0
  torch_present = importlib.util.find_spec("torch") is not None
  if not torch_present:
    assert rows["torch_ect"]["skipped"] in ("torch is not installed here", "no --ect_repo given")
  printed = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{"row"')]
  assert [p["row"] for p in printed] == list(rows)


def test_profile_ops_puts_hlo_operations_and_aten_ops_in_categories():
  """bench/profile_ops.py's categories come from the optimised HLO's metadata: a network's
  convolutions and group norms (forward and backward) and the optimizer's update are found."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  po = _load("profile_ops")

  class SongUNet(nn.Module):  # the module name the categories look for
    @nn.compact
    def __call__(self, x):
      h = nn.Conv(8, (3, 3), name="conv0")(x)
      return jax.nn.silu(nn.GroupNorm(num_groups=4, name="norm0")(h))

  net = SongUNet()
  x = jnp.ones((2, 8, 8, 3))
  params = net.init(jax.random.key(0), x)

  def step(p, x):
    g = jax.grad(lambda q: jnp.sum(net.apply(q, x) ** 2))(p)
    return jax.tree.map(lambda a, b: a - 0.1 * b, p, g)
  table = po.hlo_thunk_table(jax.jit(step).lower(params, x).compile().as_text())
  found = set(table.values())
  assert ("convolution", "forward") in found and ("convolution", "backward") in found, found
  assert any(c == "group norm" for c, _ in found), found
  assert po.category_of_path("jit(train_step)/jvp(vmap(SongUNet))/enc_32x32_block0/norm0/sub") \
      == "group norm"
  assert po.category_of_path("jit(train_step)/vmap(jit(_threefry_split))/x") == "PRNG"
  assert [po.torch_category(op) for op in ("aten::mkldnn_convolution", "aten::native_group_norm",
                                           "aten::silu", "aten::addmm", "aten::bernoulli_",
                                           "aten::lerp_", "aten::add")] == [
      "convolution", "group norm", "silu", "attention + linear", "dropout", "optimizer + EMA",
      "other network"]
