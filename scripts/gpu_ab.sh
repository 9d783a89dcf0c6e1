#!/usr/bin/env bash
# One device call comparing this tree's codec kernels with an earlier tree's: the GPU tests of the
# kernels and compressors, then benchmarks/compress.py alternately on each tree (ROUNDS times),
# so both sides see the same machine state, and scripts/tune_stochastic.py likewise (TUNE=1).  The earlier tree's src/ sits at $OLD (for example
# `git archive <commit> src | tar -x -C build/old`, carried to the device).  Results go to $OUT.
set -uo pipefail
OUT=${OUT:-gpu-out}; OLD=${OLD:-build/old}; ROUNDS=${ROUNDS:-2}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
PYTHONPATH=$PWD/src python3 -m pytest -q -p no:cacheprovider ${TESTS:-tests/test_kernels.py tests/test_compress_cuda.py} 2>&1 | tail -8
for r in $(seq "$ROUNDS"); do
  for side in new old; do
    src=$PWD/src; [ "$side" = old ] && src=$PWD/$OLD/src
    [ "${COMPRESS:-1}" = 1 ] && PYTHONPATH=$src python3 benchmarks/compress.py --rounds 1 --out "$OUT/compress-$side-$r.json" 2>&1 \
      | grep -E "copy|cast|natural|qsgd|terngrad|intsgd" | tee "$OUT/compress-$side-$r.log"
    if [ "${TUNE:-0}" = 1 ]; then
      PYTHONPATH=$src python3 scripts/tune_stochastic.py --out "$OUT/stochastic-$side-$r.json" 2>&1 \
        | grep -E "encode|copy" | tee "$OUT/stochastic-$side-$r.log"
    fi
  done
done
