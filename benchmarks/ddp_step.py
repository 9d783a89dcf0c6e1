"""What a lowbit DDP hook costs on the GPU: a ResNet-18 training step (batch 512, 32×32 images,
bf16 autocast, SGD with momentum) under ``DistributedDataParallel`` with DDP's default hook and
with torch's Python hooks (the peers: what any Python hook costs) and with each lowbit codec's
hook, one process (NCCL, world size 1: the exchange is the codec's work
alone), eagerly and with each bucket's exchange replayed from a CUDA graph (``cuda_graph=True``).
Median ms per step over the timed steps of all rounds (CUDA events; the hooks interleaved step by
step, or round by round), and the best round's median, × the default hook; stepwise, also the
median over steps of each step's time over the default hook's step in the same turn (a drift of
the machine touches both) with its quartiles; for the CUDA-graph rows, the device time of the
step's captured exchanges replayed alone, back to back (the hook's own GPU work, as % of the
default step); and whether a step synchronizes with the host
(``torch.cuda.set_sync_debug_mode("error")`` on one step).

    python benchmarks/ddp_step.py --out bench-ddp-step.json      (a CUDA device)
"""

from __future__ import annotations

import argparse
import os
import statistics

import torch
import torch.distributed as dist
from common import device_name, write_results
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook
from torch import nn

from lowbit import get_compressor
from lowbit.compress import ErrorFeedback
from lowbit.distributed.hooks import hook_for
from lowbit.models import get_model

CODECS = {
    "lowbit identity": lambda: get_compressor("identity"),
    "lowbit cast fp8": lambda: get_compressor("cast", format="fp8"),
    "lowbit cast fp4": lambda: get_compressor("cast", format="fp4"),
    "lowbit intsgd int8": lambda: get_compressor("intsgd", alpha=64.0, bits=8, n_workers=1),
    "lowbit hintsgd int8": lambda: get_compressor("hintsgd", bits=8, n_workers=1),
    "lowbit natural": lambda: get_compressor("natural"),
    "lowbit qsgd s=16": lambda: get_compressor("qsgd", levels=16),
    "lowbit qsgd 4-bit (s=7)": lambda: get_compressor("qsgd", levels=7),
    "lowbit terngrad": lambda: get_compressor("terngrad"),
    "lowbit signsgd + EF": lambda: ErrorFeedback(get_compressor("signsgd")),
    "lowbit onebit": lambda: get_compressor("onebit"),
    "lowbit powersgd r=4": lambda: get_compressor("powersgd", rank=4),
}


# torch's own Python hooks, the peers of a Python hook's cost: (state, hook)
TORCH_HOOKS = {
    "torch allreduce_hook (Python)": lambda: (None, default_hooks.allreduce_hook),
    "torch fp16_compress_hook": lambda: (None, default_hooks.fp16_compress_hook),
    "torch powerSGD_hook r=4": lambda: (powerSGD_hook.PowerSGDState(process_group=None, matrix_approximation_rank=4,
                                                                    start_powerSGD_iter=2),
                                        powerSGD_hook.powerSGD_hook),
}


def make_step(codec, x, y, cuda_graph: bool = False):
    """One training step of ResNet-18 under DDP with ``codec``'s hook (None: DDP's default; a
    (state, hook) pair: that hook; ``cuda_graph``: lowbit's hook replays each bucket's exchange)."""
    torch.manual_seed(0)
    model = get_model("resnet18").cuda().to(memory_format=torch.channels_last)
    ddp = nn.parallel.DistributedDataParallel(model)
    state = None
    if isinstance(codec, tuple):
        ddp.register_comm_hook(*codec)
    elif codec is not None:
        state, hook = hook_for(codec, model=model, seed=0, cuda_graph=cuda_graph)
        ddp.register_comm_hook(state, hook)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(ddp(x), y)
        loss.backward()
        opt.step()

    step.hook_state = state  # lowbit's hook state, or None
    return step


def prepare(label, make, x, y, warmup, cuda_graph=False):
    """(label, step, host syncs of a step): the step warmed up, checked for host synchronizations
    (one step under ``torch.cuda.set_sync_debug_mode("error")``)."""
    build = lambda: make_step(make() if make is not None else None, x, y, cuda_graph)  # noqa: E731
    step = build()
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    syncs = "none"
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
    except RuntimeError as e:
        syncs = str(e).split("\n")[0][:120]
    finally:
        torch.cuda.set_sync_debug_mode(0)
    if syncs != "none":  # the step stopped inside backward: DDP's reduction is left unfinished
        step = build()
        for _ in range(warmup):
            step()
    torch.cuda.synchronize()
    return label, step, syncs


def replay_us(state) -> list:
    """[(values, µs)] of each bucket whose exchange the hook replays from a CUDA graph: the graph
    replayed alone, back to back (median of 5 runs of 20 replays; µs None: the bucket runs eagerly,
    or its layout was seen only in DDP's first step).  The replays draw from the codec's generator."""
    out = []
    for b in state.bucket_states.values():
        runs = []
        for graph, _ in b.graphs.values():
            for _ in range(5):
                e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                e0.record()
                for _ in range(20):
                    graph.replay()
                e1.record()
                e1.synchronize()
                runs.append(1e3 * e0.elapsed_time(e1) / 20)
        out.append((sum(b.coder.sizes), statistics.median(runs) if runs else None))
    return out


def timed_steps(step, steps):
    """ms of each of ``steps`` steps (CUDA events around each, the host waiting after each)."""
    times = []
    for _ in range(steps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        step()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return times


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench-ddp-step.json")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds over all hooks")
    ap.add_argument("--only", nargs="*", default=None, help="lowbit codecs to run (labels without 'lowbit ')")
    ap.add_argument("--interleave", choices=["round", "step"], default="step",
                    help="step: one step of every hook in turn (and each step's ratio to the default's step of "
                         "the same turn, the median of those: 'paired'); round: each hook's steps of a round "
                         "back to back")
    args = ap.parse_args(argv)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29677")
    dist.init_process_group("nccl", rank=0, world_size=1)
    torch.backends.cudnn.benchmark = True
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(args.batch, 3, 32, 32, device="cuda", generator=g).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch,), device="cuda", generator=g)
    codecs = {k: v for k, v in CODECS.items() if args.only is None or k.removeprefix("lowbit ") in args.only}
    runs = [prepare("DDP default (fp32 all-reduce)", None, x, y, args.warmup)]
    runs += [prepare(label, make, x, y, args.warmup) for label, make in {**TORCH_HOOKS, **codecs}.items()]
    for label, make in codecs.items():
        try:
            runs.append(prepare(label + ", CUDA graph", make, x, y, args.warmup, cuda_graph=True))
        except RuntimeError as e:  # a capture that fails is reported, not the end of the table
            print(f"{label}, CUDA graph: failed: {str(e)[:200]}")
    times = {label: [] for label, _, _ in runs}
    for _ in range(args.rounds):  # interleaved: a drift of the machine's speed touches every row alike
        if args.interleave == "step":  # one step of every hook in turn, ``steps`` times
            cycles = [[timed_steps(step, 1)[0] for _, step, _ in runs] for _ in range(args.steps)]
            for i, (label, _, _) in enumerate(runs):
                times[label].append([c[i] for c in cycles])
        else:
            for label, step, _ in runs:
                times[label].append(timed_steps(step, args.steps))
    rows = []
    base_steps = [t for r in times[runs[0][0]] for t in r]
    for label, step, syncs in runs:
        rounds = times[label]
        flat = [t for r in rounds for t in r]
        row = {"hook": label, "ms_per_step": statistics.median(flat),
               "best_round_ms": min(statistics.median(r) for r in rounds), "best_ms": min(min(r) for r in rounds),
               "host_syncs": syncs}
        if args.interleave == "step":  # each step against the default's step of the same cycle
            ratios = [t / b for t, b in zip(flat, base_steps)]
            q = statistics.quantiles(ratios, n=4)
            row.update(x_default_paired=statistics.median(ratios), x_default_paired_q25=q[0], x_default_paired_q75=q[2])
        if getattr(step, "hook_state", None) is not None and step.hook_state.cuda_graph:
            replays = [us for _, us in replay_us(step.hook_state) if us is not None]
            row["graph_replay_us"] = sum(replays) if replays else None
        rows.append(row)
    base, best = rows[0]["ms_per_step"], rows[0]["best_round_ms"]
    paired = args.interleave == "step"
    print("| hook | ms/step | × default | best round ms | × default |"
          + (" × default, paired (quartiles) |" if paired else "")
          + " graphs replayed alone, % of default step | host syncs in a step |\n|---|---:|---:|---:|---:|"
          + ("---:|" if paired else "") + "---:|---|")
    for r in rows:
        r["x_default"] = r["ms_per_step"] / base
        r["x_default_best_round"] = r["best_round_ms"] / best
        us = r.get("graph_replay_us")
        print(f"| {r['hook']} | {r['ms_per_step']:.2f} | {r['x_default']:.3f} | {r['best_round_ms']:.2f} | "
              f"{r['x_default_best_round']:.3f} |"
              + (f" {r['x_default_paired']:.3f} ({r['x_default_paired_q25']:.3f}–{r['x_default_paired_q75']:.3f}) |"
                 if paired else "")
              + (f" {us:.0f} µs, {us / 10 / base:.2f}% |" if us else " |") + f" {r['host_syncs']} |")
    write_results(args.out, "ddp_step", rows, device=device_name("cuda"), batch=args.batch, steps=args.steps,
                  rounds=args.rounds, interleave=args.interleave)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
