"""The ``lowbit`` command.  Each subcommand registers itself in ``COMMANDS``."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from datetime import datetime
from pathlib import Path
from typing import Callable

import torch
import yaml

from .compress import Factored, OptionError, compressor_names, get_compressor
from .distributed import process_group
from .experiments import get, make_config, names, run
from .experiments.config import load_yaml
from .experiments.kind import KINDS
from .experiments.registry import describe
from .experiments.loop import Stop
from .experiments.runner import _broadcast
from .formats import _ALIASES, _REGISTRY
from .models import MODELS, PAPER_COUNTS, count_parameters, get_model
from .plots import plot_run

COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def command(name: str, help: str, setup: Callable[[argparse.ArgumentParser], None] = lambda p: None):
    def deco(fn):
        COMMANDS[name] = (help, setup, fn)
        return fn

    return deco


def _fmt_num(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


@command("formats", "table of every named number format",
         lambda p: p.add_argument("--json", action="store_true", help="print JSON instead of a table"))
def _formats(args) -> int:
    rows = [fmt.describe() for fmt in _REGISTRY.values()]
    aliases: dict[str, list[str]] = {}
    for a, n in _ALIASES.items():
        aliases.setdefault(n, []).append(a)
    for r in rows:
        r["aliases"] = ",".join(sorted(aliases.get(r["name"], []))) or "-"
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    cols = ["name", "aliases", "bits", "exp_bits", "man_bits", "bias", "max", "smallest_normal",
            "smallest_subnormal", "eps", "inf", "nan", "overflow"]
    heads = ["name", "aliases", "bits", "E", "M", "bias", "max", "min normal", "min subnormal",
             "eps", "inf", "NaN", "overflow"]
    table = [heads] + [[_fmt_num(r[c]) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    for i, row in enumerate(table):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print("\nAlso: any 'e<E>m<M>' (IEEE-style: bias 2^(E-1)-1, subnormals, inf, NaN).")
    return 0


@command("codecs", "table of every gradient compressor: properties, bits per coordinate, error",
         lambda p: p.add_argument("--numel", type=int, default=1 << 18, help="size of the test gradient"))
def _codecs(args) -> int:
    gen = torch.Generator().manual_seed(0)
    g = torch.randn(args.numel, generator=gen)
    print(f"{'codec':10} {'unbiased':>8} {'summable':>8} {'declared':>8} {'bits/coord':>10} {'ω':>6} {'rel. error':>10}"
          f"   (N(0,1) gradient, {args.numel:,} entries)")
    for name in compressor_names():
        codec = get_compressor(name)
        if name == "isgq":
            x, d = torch.randn(64, 512, generator=gen), torch.randn(64, 256, generator=gen)
            ref = Factored(x, d).dense()
            p = codec.encode(Factored(x, d), generator=gen)
        else:
            ref = g.reshape(512, -1) if name == "powersgd" else g
            p = codec.encode(ref, state=codec.init_state(ref), generator=gen)
        err = float((codec.decode(p) - ref).norm() / ref.norm())
        t = codec.traits
        bits = "data" if t.bits is None else f"{t.bits:.3g}"
        omega = "—" if t.omega is None else f"{t.omega:.3g}"
        print(f"{name:10} {str(t.unbiased):>8} {str(t.summable):>8} {bits:>8} {p.bits_per_coordinate:10.3f} {omega:>6} "
              f"{err:10.3f}")
    print("\ndeclared: the codec's own bits per coordinate (traits.bits; data: they depend on the data); ω: its declared"
          "\nvariance bound E‖C(v) − v‖² ≤ ω‖v‖².  isgq: a 64-sample factored gradient of a 512→256 layer; powersgd:"
          "\nrank 2 of a 512-row matrix.")
    return 0


def _run_setup(p):
    p.add_argument("config", nargs="?", help="a YAML config file or a named experiment (default: the main job)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. optim.lr=0.1")
    p.add_argument("--out", help="run folder (default runs/<name>-<timestamp>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run in RUN_DIR")
    p.add_argument("--jobs", type=int, default=1, help="run a sweep's sub-runs in this many processes")
    p.add_argument("--quick", action="store_true", help="apply the config's quick settings")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--stop-after", type=int, default=None, metavar="N",
                   help="stop at the first checkpoint at or after step N (epoch N of a deep run), exit code 3; "
                        "continue with --resume (under torchrun: the first attempt only, a restart runs to the end)")


def _default_out(name: str) -> str:
    """runs/<name>-<timestamp>; under torchrun runs/<name>-<rendezvous id> when one is set, so
    that a restarted run finds its folder (or give --out)."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "none")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and run_id not in ("", "none"):
        return f"runs/{name}-{run_id}"
    return f"runs/{name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _report(summary: dict, out: str) -> None:
    for line in KINDS[summary["kind"]].report(summary["runs"]):
        print(line)
    for c in summary.get("claims", []):
        print(f"[{'holds' if c['holds'] else 'FAILS'}] {c['name']}: {c['detail']}")
    for p in summary.get("published", []):
        state = {True: "agrees", False: "DIFFERS", None: "not run"}[p["holds"]]
        got = "—" if p["measured"] is None else f"{p['measured']:.4g}" if isinstance(p["measured"], float) else p["measured"]
        print(f"[{state}] {p['quantity']}: lowbit {got}, published {p['published']} ({p['source']}; "
              f"tolerance {p['tolerance']})")
    for fig in summary.get("figures", []):
        print(f"figure: {out}/{fig}")
    print(f"results: {out}")


def _execute(cfg, out, args, resume=False) -> int:
    """Run ``cfg`` into ``out``; under torchrun (WORLD_SIZE > 1) every process takes part, rank 0
    chooses the folder and writes the results, and a run restarted by torchrun resumes."""
    multi = process_group.init(cfg.dist.backend, cfg.dist.timeout)
    try:
        if multi:
            out = _broadcast(str(out))
            resume = resume or int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
        restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
        stop = args.stop_after if not restarted else None  # a restart by torchrun resumes and finishes
        summary = run(cfg, out, resume=resume, jobs=args.jobs, quiet=args.quiet or process_group.rank() > 0,
                      stop_after=stop)
        if process_group.rank() == 0:
            _report(summary, str(out))
    finally:
        if multi:
            process_group.shutdown()
    return 0


@command("run", "run an experiment: a config file or named experiment, with key=value overrides", _run_setup)
def _run(args) -> int:
    if args.resume:
        path = Path(args.resume)
        if not (path / "config.yaml").exists():
            raise FileNotFoundError(f"{path} is not a run folder (no config.yaml)")
        cfg = make_config(yaml.safe_load((path / "config.yaml").read_text()))
        return _execute(cfg, path, args, resume=True)
    overrides = list(args.overrides)
    source = args.config
    if source and "=" in source:  # `lowbit run key=value …`: overrides of the main job
        overrides.insert(0, source)
        source = None
    if source is None:
        data = get("default")
    elif Path(source).exists():
        data = load_yaml(source)
    elif source in names():
        data = get(source)
    else:
        raise FileNotFoundError(f"{source!r} is neither a config file nor a named experiment ({', '.join(names())})")
    cfg = make_config(data, overrides, quick=args.quick)
    return _execute(cfg, args.out or _default_out(cfg.name), args)


def _reproduce_setup(p):
    p.add_argument("name", help="a named experiment (lowbit list)")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--quick", action="store_true", help="the reduced variant (minutes on a laptop CPU)")
    p.add_argument("--out")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--stop-after", type=int, default=None, metavar="N",
                   help="stop at the first checkpoint at or after step N (epoch N of a deep run), exit code 3; "
                        "continue with --resume (under torchrun: the first attempt only, a restart runs to the end)")


@command("reproduce", "reproduce a figure or table of the sources (lowbit list shows which)", _reproduce_setup)
def _reproduce(args) -> int:
    cfg = make_config(get(args.name), args.overrides, quick=args.quick)
    return _execute(cfg, args.out or _default_out(cfg.name + ("-quick" if args.quick else "")), args)


@command("models", "the deep lab's models and their parameter counts")
def _models(args) -> int:
    print(f"{'model':10} {'parameters':>12} {'as the source counts':>21}")
    for name in MODELS:
        n = count_parameters(get_model(name))
        paper = PAPER_COUNTS.get(name)
        print(f"{name:10} {n:12,} {f'{paper / 1e6:.2f} M' if paper else '':>21}")
    print("\nCIFAR-style ResNets (3×3 stem); resnet50 with stem=imagenet: "
          f"{count_parameters(get_model('resnet50', stem='imagenet')):,}")
    return 0


@command("list", "the named experiments")
def _list(args) -> int:
    for n in names():
        print(f"{n:18} {describe(n)}")
    return 0


@command("plot", "(re)draw the figures of run folders",
         lambda p: p.add_argument("runs", nargs="+", metavar="RUN_DIR"))
def _plot(args) -> int:
    for r in args.runs:
        for fig in plot_run(r):
            print(f"{r}/{fig}")
    return 0


def _launch_setup(p):
    p.add_argument("--nproc-per-node", "--nproc", dest="nproc", default="2",
                   help="processes per machine (torchrun's --nproc-per-node; 'gpu' = one per GPU)")
    p.add_argument("--torchrun", default="", metavar="ARGS",
                   help="more torchrun arguments in one string, e.g. '--nnodes 2 --node-rank 0 "
                        "--rdzv-endpoint host:29500 --max-restarts 3'")
    p.add_argument("rest", nargs=argparse.REMAINDER, metavar="COMMAND", help="a lowbit command: run …, reproduce …")


@command("launch", "run a lowbit command over several processes with torchrun", _launch_setup)
def _launch(args) -> int:
    rest = [a for a in args.rest if a != "--"]
    if not rest:
        raise ValueError("give the lowbit command to launch, e.g. lowbit launch --nproc 4 run intsgd-a5a dist.workers=4")
    extra = shlex.split(args.torchrun)
    if not any(a.startswith("--rdzv") or a.startswith("--master") for a in extra) and "--standalone" not in extra:
        extra = ["--standalone", *extra]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(args.nproc), *extra,
           "-m", "lowbit", *rest]
    print("+ " + " ".join(shlex.quote(c) for c in cmd), file=sys.stderr, flush=True)
    os.execv(sys.executable, cmd)
    return 0  # not reached


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lowbit", description="Low-precision and compressed-gradient training.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_, setup, _) in COMMANDS.items():
        setup(sub.add_parser(name, help=help_, description=help_))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides given after options
        bad = [e for e in extra if "=" not in e or e.startswith("-")]
        if bad or not hasattr(args, "overrides"):
            parser.error(f"unrecognized arguments: {' '.join(bad or extra)}")
        args.overrides = list(args.overrides or []) + extra
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command][2](args) or 0
    except (ValueError, OptionError, FileNotFoundError) as e:  # what the user gave; any other error is a bug: raised
        print(f"lowbit {args.command}: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        if not isinstance(e, Stop):
            raise
        print(f"lowbit {args.command}: stopped at step {e.args[0]} (--stop-after); continue with: lowbit run --resume "
              "<run folder>", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f"lowbit {args.command}: interrupted; continue with: lowbit run --resume <run folder>", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
