#!/usr/bin/env bash
# One device call for the number-format work: GPU tests, the throughput benchmark (with the
# Triton tuning sweep and QPyTorch where its wheel was carried in .whl/), and the exhaustive
# 2^32 sweep. Results go to $OUT (or ./gpu-out).
set -uo pipefail
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
if ls .whl/qtorch-*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/qtorch-*.whl && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
python3 -m pytest -q -p no:cacheprovider tests/test_kernels.py 2>&1 | tail -5
python3 benchmarks/quantize.py --tune --out "$OUT/bench-quantize-cuda.json" 2>&1 | tee "$OUT/bench.log" | grep -v "^tune"
python3 scripts/exhaustive_check.py --out "$OUT/exhaustive.json" 2>&1 | grep -v -i "warn" | tee "$OUT/exhaustive.log"
