"""Step time of ResNet-18 (CIFAR-10 shapes, synthetic data) with fp32 gradients against each
codec applied through QuantizedGradients (the multi-tensor path with the codec's kernels replayed
from a CUDA graph; two rows launching them one by one, two per parameter, and, for cast fp8,
rows with the shrinkage statistics and the NaN check that training runs keep on: with plain SGD,
whose check reads the host, and with fused SGD, which skips a non-finite step on the device, each
against the same codec and launch mode without them), and images per
second of a whole epoch in lowbit's on-device loop against the same model fed by a plain
PyTorch DataLoader.

Whole steps are timed in interleaved rounds (their spread is printed); "codec ms" is the
optimizer step alone on fixed gradients minus plain SGD's (host time where the host is slower
than the device), its share of the fp32 step beside it.

    python benchmarks/train_step.py                 # GPU (batch 512); prints a table, writes JSON
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import timer, write_results  # noqa: E402
import torch.nn.functional as F

from lowbit import get_compressor
from lowbit.data.augment import augment
from lowbit.models import resnet18
from lowbit.optim import QuantizedGradients

CODECS = {
    "cast fp8": lambda: get_compressor("cast", format="fp8"),
    "cast fp4": lambda: get_compressor("cast", format="fp4"),
    "cast fp8 stochastic": lambda: get_compressor("cast", format="fp8", rounding="stochastic"),
    "intsgd int8": lambda: get_compressor("intsgd", alpha=1e3, bits=8),
    "natural": lambda: get_compressor("natural"),
    "qsgd s=16": lambda: get_compressor("qsgd", levels=16),
    "terngrad": lambda: get_compressor("terngrad"),
    "signsgd": lambda: get_compressor("signsgd"),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--epoch-images", type=int, default=None)
    ap.add_argument("--out", default="bench-train-step.json")
    ap.add_argument("--profile", action="store_true", help="also print where the device time of a step goes")
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    B = args.batch or (512 if cuda else 32)
    steps = args.steps or (10 if cuda else 2)
    torch.manual_seed(0)
    model = resnet18().to(dev).to(memory_format=torch.channels_last)
    x = torch.randn(B, 3, 32, 32, device=dev).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (B,), device=dev)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    models = {}  # each variant trains its own copy of the model (its gradient buffer stays in place)

    def one(opt):
        opt.zero_grad()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
            loss = F.cross_entropy(models[id(opt)](x), y)
        loss.backward()
        opt.step()

    variants = [(label, make, {"cuda_graph": True}) for label, make in CODECS.items()]
    variants += [("cast fp8, eager launches", CODECS["cast fp8"], {}),
                 ("qsgd s=16, eager launches", CODECS["qsgd s=16"], {}),
                 ("cast fp8, q + NaN check (host read)", CODECS["cast fp8"], {"record": True, "check_finite": True}),
                 # fused SGD skips a non-finite step on the device: no host read for the check
                 ("cast fp8, fused SGD", CODECS["cast fp8"], {"cuda_graph": True, "fused": True}),
                 ("cast fp8, fused SGD, q + NaN check", CODECS["cast fp8"],
                  {"cuda_graph": True, "fused": True, "record": True, "check_finite": True}),
                 ("cast fp8, fused SGD, eager launches", CODECS["cast fp8"], {"fused": True}),
                 ("cast fp8, fused SGD, eager launches, q + NaN check", CODECS["cast fp8"],
                  {"fused": True, "record": True, "check_finite": True}),
                 ("cast fp8, per parameter", CODECS["cast fp8"], {"multi_tensor": False}),
                 ("qsgd s=16, per parameter", CODECS["qsgd s=16"], {"multi_tensor": False})]
    opts = [("fp32 gradients", torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9))]
    models[id(opts[0][1])] = model
    for label, make, extra in variants:
        m = copy.deepcopy(model)
        extra = dict(extra)
        fused = extra.pop("fused", None)
        base = torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9, fused=fused)
        opts.append((label, QuantizedGradients(base, make(), **{"record": False, "check_finite": False, **extra})))
        models[id(opts[-1][1])] = m
    for _, opt in opts:  # warm-up: compilation, autotuning, allocator
        for _ in range(3):
            one(opt)
    # interleaved rounds, so that clock and thermal drift fall on every variant alike; each sample
    # is the mean of `steps` queued steps (no sync between them, as in a training loop)
    rounds = 15 if cuda else 1
    samples: dict[str, list[float]] = {label: [] for label, _ in opts}
    for _ in range(rounds):
        for label, opt in opts:
            sync()
            t0 = time.perf_counter()
            for _ in range(steps):
                one(opt)
            sync()
            samples[label].append((time.perf_counter() - t0) / steps)
    rows = [{"name": label, "seconds": statistics.median(v), "best_s": min(v),
             "spread": (max(v) - min(v)) / statistics.median(v)} for label, v in samples.items()]
    t_fp32 = rows[0]["seconds"]
    for r in rows:
        r["overhead"] = r["seconds"] / t_fp32 - 1
        r["best_overhead"] = r["best_s"] / rows[0]["best_s"] - 1
    # The optimizer step alone on fixed gradients (queued calls between CUDA events): what each
    # codec adds to a step, free of the whole step's run-to-run spread.
    one(opts[0][1])
    grads = [p.grad.detach().clone() for p in model.parameters()]

    def step_only(opt):  # gradients copied into the existing .grad tensors, as autograd accumulates
        torch._foreach_copy_([p.grad for p in models[id(opt)].parameters()], grads)
        opt.step()

    run = timer(dev.type)
    base_step = run(lambda: step_only(opts[0][1]), 20)
    for r, (_, opt) in zip(rows, opts):
        r["step_only_s"] = run(lambda: step_only(opt), 20)
        r["codec_s"] = r["step_only_s"] - base_step
        r["codec_overhead"] = r["codec_s"] / t_fp32

    if args.profile and cuda:  # device time per step (kernels only: free of the host's noise)
        from torch.profiler import ProfilerActivity, profile

        base_keys = None
        for r, (label, opt) in zip(rows, opts):
            for _ in range(3):
                one(opt)
            sync()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(8):
                    one(opt)
                sync()
            ev = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
            r["device_s"] = sum(e.self_device_time_total for e in ev) / 8 / 1e6
            keys = {e.key for e in ev}
            if base_keys is None:
                base_keys = keys
            extra = sorted((e for e in ev if e.key not in base_keys), key=lambda e: -e.self_device_time_total)
            r["codec_kernels"] = [(e.key[:60], e.self_device_time_total / 8 / 1e3) for e in extra[:4]]
        for r in rows:
            r["device_overhead"] = r["device_s"] / rows[0]["device_s"] - 1

    # a whole epoch: lowbit's loop (data on the device, augmentation in batch) vs a DataLoader loop
    n = args.epoch_images or (50_000 if cuda else 1024)
    data_x = torch.randn(n, 3, 32, 32)
    data_y = torch.randint(0, 10, (n,))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def train(xb, yb):
        xb = xb.contiguous(memory_format=torch.channels_last)
        opt.zero_grad()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
            loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()

    gx, gy = data_x.to(dev), data_y.to(dev)
    gen = torch.Generator(device=dev).manual_seed(0)
    sync()
    t0 = time.perf_counter()
    perm = torch.randperm(n, device=dev, generator=gen)
    for i in range(0, n - B + 1, B):
        idx = perm[i : i + B]
        train(augment(gx[idx], gen), gy[idx])
    sync()
    ours = (n // B) * B / (time.perf_counter() - t0)

    class PerSample(torch.utils.data.Dataset):
        """The usual pipeline: one image at a time, padded, cropped and flipped on the CPU."""

        def __len__(self):
            return n

        def __getitem__(self, k):
            img = F.pad(data_x[k], (4, 4, 4, 4))
            i, j = torch.randint(0, 9, (2,)).tolist()
            img = img[:, i : i + 32, j : j + 32]
            return (img.flip(2) if torch.rand(()) < 0.5 else img), data_y[k]

    workers = 4 if cuda else 0
    loader = torch.utils.data.DataLoader(PerSample(), batch_size=B, shuffle=True, drop_last=True,
                                         num_workers=workers, pin_memory=cuda, persistent_workers=False)
    sync()
    t0 = time.perf_counter()
    for xb, yb in loader:
        train(xb.to(dev, non_blocking=True), yb.to(dev, non_blocking=True))
    sync()
    peer = (n // B) * B / (time.perf_counter() - t0)
    rows.append({"name": "epoch: lowbit on-device loop", "images_per_s": ours, "images": n})
    rows.append({"name": f"epoch: DataLoader loop ({workers} workers)", "images_per_s": peer, "images": n})

    name = torch.cuda.get_device_name() if cuda else "cpu"
    print(f"\nResNet-18, batch {B}, CIFAR-10 shapes, bf16 autocast on {name}")
    print(f"{'gradients':28} {'ms/step':>8} {'(spread)':>9} {'best':>7} {'overhead':>9} {'codec ms':>9} "
          f"{'device ms':>10} {'overhead':>9}")
    for r in rows:
        if "seconds" in r:
            dev_ms = f"{1e3 * r['device_s']:10.3f} {100 * r['device_overhead']:8.1f}%" if "device_s" in r else ""
            print(f"{r['name']:28} {1e3 * r['seconds']:8.2f} {100 * r['spread']:8.1f}% {1e3 * r['best_s']:7.2f} "
                  f"{100 * r['best_overhead']:8.1f}% {1e3 * r['codec_s']:9.3f} {dev_ms}")
    for r in rows:
        if r.get("codec_kernels"):
            print(f"  {r['name']}: " + "; ".join(f"{k} {ms:.3f} ms" for k, ms in r["codec_kernels"]))
    # what the statistics and the finite check cost over the same codec and launch mode without them
    by_name = {r["name"]: r for r in rows if "seconds" in r}
    costs = []
    for base in ("cast fp8, fused SGD", "cast fp8, fused SGD, eager launches"):
        a, b = by_name[base], by_name[base + ", q + NaN check"]
        c = {"name": f"cost of q + NaN check: {base}", "wall_best": b["best_s"] / a["best_s"] - 1,
             "wall_median": b["seconds"] / a["seconds"] - 1}
        if "device_s" in a:
            c["device"] = b["device_s"] / a["device_s"] - 1
        costs.append(c)
        print(f"{c['name']}: wall {100 * c['wall_best']:+.1f}% (best round), {100 * c['wall_median']:+.1f}% (median)"
              + (f", device {100 * c['device']:+.1f}%" if "device" in c else ""))
    rows += costs
    print(f"\nfull epoch of {n:,} images: lowbit {ours:,.0f} img/s, DataLoader {peer:,.0f} img/s "
          f"({ours / peer:.2f}x)")
    write_results(args.out, "train_step", rows, device=name, batch=B)
    return 0


if __name__ == "__main__":
    sys.exit(main())
