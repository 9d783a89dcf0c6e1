"""The ``lowbit`` command.  Each subcommand registers itself in ``COMMANDS``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

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
    from .formats import _ALIASES, _REGISTRY

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
    import torch

    from .compress import Factored, compressor_names, get_compressor

    gen = torch.Generator().manual_seed(0)
    g = torch.randn(args.numel, generator=gen)
    print(f"{'codec':10} {'unbiased':>8} {'summable':>8} {'bits/coord':>10} {'rel. error':>10}   (N(0,1) gradient, {args.numel:,} entries)")
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
        print(f"{name:10} {str(codec.unbiased):>8} {str(codec.summable):>8} {p.bits_per_coordinate:10.3f} {err:10.3f}")
    print("\nisgq: a 64-sample factored gradient of a 512→256 layer; powersgd: rank 2 of a 512-row matrix.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lowbit", description="Low-precision and compressed-gradient training.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_, setup, _) in COMMANDS.items():
        setup(sub.add_parser(name, help=help_, description=help_))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command][2](args) or 0
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"lowbit {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
