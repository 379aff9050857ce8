#!/usr/bin/env bash
# The GPU half of pdgen's checks, in one go, for a short GPU lease: the attention and kernel tests
# compiled for the GPU (the gpu-marked ones included), then the attention benchmark.
#
#   tools/gpu_checks.sh OUT_DIR [LAYOUTS_JSON]
#
# Run from the repository root. Without an installed pdgen it uses the checkout (PYTHONPATH=.).
# LAYOUTS_JSON comes from `python tools/bench_attention.py --save-layouts FILE`, built on any machine,
# so the GPU machine needs only torch, triton and pytest.
set -uo pipefail
out=${1:?usage: tools/gpu_checks.sh OUT_DIR [LAYOUTS_JSON]}
layouts=${2:-}
mkdir -p "$out"
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}. PYTHONUNBUFFERED=1

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" \
    | tee -a "$out/gpu.txt"
timeout 300 python3 -m pytest -q -p no:cacheprovider tests/kernels tests/models/test_attention.py \
    tests/models/bagel/test_trunk_gpu.py 2>&1 | tee "$out/pytest.txt"
tests_status=${PIPESTATUS[0]}
python3 tools/bench_attention.py ${layouts:+--layouts "$layouts"} \
    --json "$out/attention.json" --markdown "$out/attention.md" 2>&1 | tee "$out/bench.txt"
bench_status=${PIPESTATUS[0]}
echo "tests exit $tests_status, bench exit $bench_status"
exit $((tests_status || bench_status))
