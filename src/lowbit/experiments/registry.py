"""Named experiments: YAML files shipped with lowbit (``configs/``), run by the one runner."""

from __future__ import annotations

import difflib
from pathlib import Path

from .config import load_yaml

CONFIGS = Path(__file__).parent / "configs"


def names() -> list[str]:
    return sorted(p.stem for p in CONFIGS.glob("*.yaml"))


def describe(name: str) -> str:
    text = (CONFIGS / f"{name}.yaml").read_text().splitlines()
    return text[0].lstrip("# ").strip() if text and text[0].startswith("#") else ""


def get(name: str) -> dict:
    path = CONFIGS / f"{name}.yaml"
    if not path.exists():
        close = difflib.get_close_matches(name, names(), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown experiment {name!r}.{hint} Known: {', '.join(names())}")
    return load_yaml(path)
