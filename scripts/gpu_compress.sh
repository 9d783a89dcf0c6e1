#!/usr/bin/env bash
# One device call: GPU tests of quantize and the compressors, the quantize benchmark (QPyTorch as a
# peer where its wheel was carried in .whl/) and the compressor benchmark. Results go to $OUT.
set -uo pipefail
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
if ls .whl/qtorch-*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/qtorch-*.whl && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
python3 -m pytest -q -p no:cacheprovider tests/test_kernels.py tests/test_compress_cuda.py 2>&1 | tail -15
python3 benchmarks/compress.py --out "$OUT/bench-compress-cuda.json" 2>&1 | tee "$OUT/compress.log"
python3 benchmarks/quantize.py --out "$OUT/bench-quantize-cuda.json" 2>&1 | tee "$OUT/quantize.log"
