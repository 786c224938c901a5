#!/usr/bin/env bash
# GPU check of cmjax on one H100/H200 (fits in 8 minutes): the CIFAR-10 ECT DDPM++ step at batch
# 128 in fp32 and bf16, the ImageNet-64 ADM step in bf16, 1-step sampling at batch 1024, and the
# PyTorch reference (locuslab/ect) step when --ect_repo is given. See bench/gpu_check.py for the
# rows and the JSON it writes (bench/results/gpu_check_<device>.json unless --json).
#
#   bash bench/gpu_check.sh [--dry] [--ect_repo PATH] [--json out.json] [--steps N]
#
# --dry: the same code path on CPU with the ':smoke' nets at batch 8 (< 2 minutes; tested by
# tests/test_bench_scripts.py).
# A GPU image with jax, flax, optax and orbax lacks ml_collections (cmjax's configs); put wheels
# in bench/wheels/ and they are installed offline into a private folder first, e.g. here:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --platform manylinux2014_x86_64 -d bench/wheels ml_collections==1.1.0
# (add tensorboardX, tensorflow-datasets, grain ... only for the trainer; this check needs none).
# PYTHON overrides the interpreter (default python3); GPU_CHECK_TIMEOUT the limit in seconds (470).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
py="${PYTHON:-python3}"
limit="${GPU_CHECK_TIMEOUT:-470}"
dry=0
for a in "$@"; do [[ "$a" == "--dry" ]] && dry=1; done

shopt -s nullglob
wheels=("$here"/wheels/*.whl)
if (( ${#wheels[@]} )); then
  site="${GPU_CHECK_SITE:-/tmp/cmjax_gpu_check_site}"
  echo "gpu_check: installing ${#wheels[@]} wheel(s) from bench/wheels into $site (offline)"
  "$py" -m pip install -q --no-index --no-deps --no-compile --find-links "$here/wheels" \
      --target "$site" --upgrade "${wheels[@]}"
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi

missing="$("$py" - <<'EOF'
import importlib.util
need = ["jax", "flax", "optax", "orbax.checkpoint", "ml_collections", "numpy"]
print(" ".join(n for n in need if importlib.util.find_spec(n.split(".")[0]) is None))
EOF
)"
if [[ -n "$missing" ]]; then
  echo "gpu_check: missing Python packages: $missing (put their wheels in bench/wheels/)" >&2
  exit 2
fi

if (( dry )); then
  export JAX_PLATFORMS=cpu
else
  "$py" -c 'import jax; d = jax.devices()[0]; print("gpu_check: device", d.platform, d.device_kind)'
fi
export PYTHONUNBUFFERED=1
cd "$root"
exec timeout --signal=TERM --kill-after=20 "$limit" "$py" bench/gpu_check.py --budget_s "$((limit - 15))" "$@"
