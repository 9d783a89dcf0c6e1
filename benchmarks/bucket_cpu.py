"""One rank's share of a compressed DDP step on the CPU: ResNet-18's 62 gradient tensors as one
bucket (11.2 M float32), one thread, through ``lowbit.distributed.bucket.BucketCoder`` — the encode a
rank makes, and the mean of two ranks' messages it decodes (the in-flight sum's decode for
summable codecs).  Best of ``--reps`` after a warm-up; the peers, measured in the same run: a
copy of the bucket (read + write), drawing one random word in [0, 2^31) per value from torch's
CPU generator (what the CPU's stochastic rounding drew before lowbit's own stream), and lowbit's
stream's words (``lowbit.kernels.stream``: what it draws now).  ``encode, words ahead``: the encode after
``lowbit.quantize.draw_ahead`` has drawn its random words (what the DDP hook arranges while a
bucket is on the wire).

    python benchmarks/bucket_cpu.py --out benchmarks/results/bucket-cpu.json
"""

from __future__ import annotations

import argparse
import time

import torch
from common import write_results

from lowbit import get_compressor
from lowbit.compress import ErrorFeedback
from lowbit.distributed.bucket import BucketCoder
from lowbit.models import get_model

CODECS = {
    "cast fp8": lambda: get_compressor("cast", format="fp8"),
    "cast fp4": lambda: get_compressor("cast", format="fp4"),
    "intsgd int8": lambda: get_compressor("intsgd", alpha=64.0, bits=8, n_workers=2),
    "natural": lambda: get_compressor("natural"),
    "qsgd s=16": lambda: get_compressor("qsgd", levels=16),
    "qsgd 4-bit (s=7)": lambda: get_compressor("qsgd", levels=7),
    "terngrad": lambda: get_compressor("terngrad"),
    "signsgd + EF": lambda: ErrorFeedback(get_compressor("signsgd")),
    "onebit": lambda: get_compressor("onebit"),
    "powersgd r=4": lambda: get_compressor("powersgd", rank=4),
}


def best(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", default="benchmarks/results/bucket-cpu.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    try:
        from lowbit.quantize import draw_ahead
    except ImportError:  # a release without it
        draw_ahead = None
    params = list(get_model("resnet18").parameters())
    sizes, shapes = [p.numel() for p in params], [tuple(p.shape) for p in params]
    g = torch.Generator().manual_seed(0)
    flat = torch.randn(sum(sizes), generator=g) * 1e-2
    out, copy_dst = torch.empty_like(flat), torch.empty_like(flat)
    copy_s = best(lambda: copy_dst.copy_(flat), args.reps)
    words = torch.empty(sum(sizes), dtype=torch.int32)
    draw_s = best(lambda: words.random_(0, 2**31, generator=g), args.reps)  # what bit-exact stochastic rounding draws
    rows = [{"codec": "peer: copy of the bucket", "encode_ms": 1e3 * copy_s},
            {"codec": "peer: torch's random words in [0, 2^31), one per value", "encode_ms": 1e3 * draw_s}]
    try:
        from lowbit.kernels import stream
    except ImportError:  # a release without it
        stream = None
    if stream is not None:
        stream_s = best(lambda: stream.words(words, 12345), args.reps)
        rows.append({"codec": "lowbit's stream: Philox words, one per value", "encode_ms": 1e3 * stream_s})
    print(f"{sum(sizes):,} float32 in {len(sizes)} tensors, one thread; copy {1e3 * copy_s:.1f} ms; "
          f"torch's random words {1e3 * draw_s:.1f} ms ({1e9 * draw_s / sum(sizes):.1f} ns per value)"
          + (f"; lowbit's stream {1e3 * stream_s:.1f} ms" if stream is not None else ""))
    print(f"{'codec':20s} {'encode ms':>10s} {'words ahead':>12s} {'mean of 2 ms':>13s}")
    for label, make in CODECS.items():
        coder = BucketCoder(make(), sizes, "cpu", shapes=shapes)
        gen = torch.Generator().manual_seed(1)
        memory = torch.zeros_like(flat) if coder.feedback else None
        states = [coder.inner.init_state(torch.empty(sh)) for sh in shapes] if coder.inner.traits.worker_state else None
        last = {}

        def encode():
            last["p"], _, last["own"] = coder.encode_decoded(flat, generator=gen, memory=memory, states=states)

        enc = best(encode, args.reps)
        ahead = None
        if draw_ahead is not None:
            times = []
            for _ in range(args.reps):
                draw_ahead(gen)
                time.sleep(0.3)  # the draw finishes on its thread, as it does while a bucket travels
                t = time.perf_counter()
                encode()
                times.append(time.perf_counter() - t)
            ahead = min(times)
        p = last["p"]
        if coder.summable:
            total = coder.sum_payloads([p, p])
            mean = best(lambda: coder.decode_sum(total, 2, out), args.reps)
        else:
            known = {0: last["own"]} if last["own"] is not None else None
            mean = best(lambda: coder.mean_decoded([p, p], out, known), args.reps)
        rows.append({"codec": label, "encode_ms": 1e3 * enc, "encode_words_ahead_ms": ahead and 1e3 * ahead,
                     "mean_of_two_ms": 1e3 * mean})
        a = f"{1e3 * ahead:12.1f}" if ahead is not None else f"{'':12s}"
        print(f"{label:20s} {1e3 * enc:10.1f} {a} {1e3 * mean:13.1f}")
    write_results(args.out, "bucket_cpu", rows, elements=sum(sizes), tensors=len(sizes))


if __name__ == "__main__":
    main()
