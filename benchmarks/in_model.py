"""Rounding inside a model: a ResNet-18 training step (batch 512, float32, 32×32 images) with a
quantizer after every convolution (fp8 e4m3 forward and backward, nearest), eager and compiled,
against the same model without quantizers and with QPyTorch's ``Quantizer`` (where the ``qtorch``
package imports); and the optimizer step alone: SGD with momentum, lowbit's ``LowPrecision``
(bf16 weights, stochastic; bf16 momentum) and QPyTorch's ``OptimLP`` with the same formats.

    python benchmarks/in_model.py --out bench-in-model.json      (a CUDA device)
"""

from __future__ import annotations

import argparse
import sys

import torch
from common import device_name, timer, write_results
from torch import nn

import lowbit
from lowbit.models import get_model
from lowbit.optim import LowPrecision


def _model(dev):
    torch.manual_seed(0)
    return get_model("resnet18").to(dev)


def _step_fn(model, opt, x, y):
    def step():
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return step


def _qtorch_lower(model):
    from qtorch import FloatingPoint
    from qtorch.quant import Quantizer

    q = lambda: Quantizer(FloatingPoint(4, 3), FloatingPoint(4, 3), "nearest", "nearest")  # noqa: E731
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.add_module("output_quantizer", q())
            m.register_forward_hook(lambda mod, i, out: mod.output_quantizer(out))
    return model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench-in-model.json")
    ap.add_argument("--batch", type=int, default=512)
    args = ap.parse_args(argv)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.randn(args.batch, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (args.batch,), device=dev)
    time_it = timer(dev, inner=5, backlog=True)  # device time: the host issues a step slower than some run
    rows, base = [], {}

    def add(name, fn, peer=None, reps=10):
        s = time_it(fn, reps)
        row = {"name": name, "seconds": s}
        if peer is not None:
            row["peer"] = peer
            row["ratio"] = s / base[peer]
        base[name] = s
        rows.append(row)
        extra = f"  {row['ratio']:.3f}x {peer}" if peer else ""
        print(f"{name:44} {1e3 * s:9.3f} ms{extra}", flush=True)

    lower = lambda m: lowbit.nn.lower(m, nn.Conv2d, forward="fp8", backward="fp8")  # noqa: E731
    for compiled in (False, True):
        tag = " compiled" if compiled else ""
        for kind in ("plain", "lowbit"):
            m = _model(dev) if kind == "plain" else lower(_model(dev))
            torch._dynamo.reset()  # each model compiled afresh
            fwd = torch.compile(m) if compiled else m
            opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
            add(f"{kind}{tag}", _step_fn(fwd, opt, x, y), peer=None if kind == "plain" else f"plain{tag}")
        if compiled:  # share of the logits equal to eager's: inductor's conv/BN arithmetic differs in ulps,
            m = lower(_model(dev)).eval()  # which can move a value across an fp8 rounding boundary
            with torch.no_grad():
                torch._dynamo.reset()
                compiled_logits, eager_logits = torch.compile(m)(x[:64]), m(x[:64])
                plain_logits = _model(dev).eval()(x[:64])
            same = float((compiled_logits == eager_logits).double().mean())
            rows.append({"name": "lowbit compiled logits equal to eager", "value": same})
            print(f"{'lowbit compiled logits equal to eager':44} {100 * same:.1f}%")
            # that the compiled model rounds: a compiled convolution with its quantizer gives values
            # on the fp8 grid (a share of 1), where the same convolution alone does not
            conv = nn.Conv2d(3, 64, 3, padding=1).to(dev)
            with torch.no_grad():
                bare = conv(x[:64])  # before lower() adds the quantizer to this very module
                torch._dynamo.reset()
                out = torch.compile(lower(nn.Sequential(conv)))(x[:64])
            on_grid = float((lowbit.quantize(out, "fp8") == out).double().mean())
            bare_grid = float((lowbit.quantize(bare, "fp8") == bare).double().mean())
            rows.append({"name": "compiled conv + quantizer: share of outputs on the fp8 grid", "value": on_grid,
                         "without_quantizer": bare_grid})
            print(f"{'compiled conv + quantizer: on the fp8 grid':44} {100 * on_grid:.1f}% (without: {100 * bare_grid:.1f}%)")
    try:
        m = _qtorch_lower(_model(dev))
        opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
        add("qtorch Quantizer (FloatingPoint(4, 3))", _step_fn(m, opt, x, y), peer="plain")
        rows.append({"name": "qtorch / lowbit (eager)", "ratio": base["qtorch Quantizer (FloatingPoint(4, 3))"] / base["lowbit"]})
        print(f"{'qtorch / lowbit (eager)':44} {rows[-1]['ratio']:.2f}x")
        torch._dynamo.reset()  # QPyTorch's best: compiled around its operator (graph breaks there)
        m = _qtorch_lower(_model(dev))
        opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
        add("qtorch Quantizer, compiled", _step_fn(torch.compile(m), opt, x, y), peer="plain compiled")
        for a, b in (("qtorch Quantizer (FloatingPoint(4, 3))", "lowbit"), ("qtorch Quantizer, compiled", "lowbit compiled")):
            rows.append({"name": f"{a} / {b}", "ratio": base[a] / base[b]})
            print(f"{a + ' / ' + b:44} {rows[-1]['ratio']:.2f}x")
    except Exception as e:  # noqa: BLE001 - the peer is optional
        rows.append({"name": "qtorch", "error": f"{type(e).__name__}: {e}"[:300]})
        print(f"qtorch not available: {e}")

    # the optimizer step alone, on fixed gradients
    m = _model(dev)
    nn.functional.cross_entropy(m(x), y).backward()
    params = list(m.parameters())
    sgd = torch.optim.SGD(params, lr=1e-4, momentum=0.9)
    add("SGD step (momentum)", sgd.step, reps=20)
    lp = LowPrecision(torch.optim.SGD(params, lr=1e-4, momentum=0.9), weight="bf16", state="bf16", record=False)
    add("lowbit LowPrecision (bf16 weights, momentum)", lambda: lp.step(), peer="SGD step (momentum)", reps=20)
    try:
        from qtorch import FloatingPoint
        from qtorch.optim import OptimLP
        from qtorch.quant import quantizer

        wq = quantizer(FloatingPoint(8, 7), forward_rounding="stochastic")
        mq = quantizer(FloatingPoint(8, 7), forward_rounding="nearest")
        olp = OptimLP(torch.optim.SGD(params, lr=1e-4, momentum=0.9), weight_quant=wq, momentum_quant=mq)
        add("qtorch OptimLP (bf16-like weights, momentum)", lambda: olp.step(), peer="SGD step (momentum)", reps=20)
        rows.append({"name": "OptimLP / LowPrecision", "ratio": base["qtorch OptimLP (bf16-like weights, momentum)"]
                     / base["lowbit LowPrecision (bf16 weights, momentum)"]})
        print(f"{'OptimLP / LowPrecision':44} {rows[-1]['ratio']:.2f}x")
    except Exception as e:  # noqa: BLE001
        rows.append({"name": "qtorch OptimLP", "error": f"{type(e).__name__}: {e}"[:300]})
    write_results(args.out, "in_model", rows, device=device_name(dev), batch=args.batch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
