"""The one runner: a validated config in, a run folder out.

Every sub-run of the config's sweep runs through its kind (:mod:`lowbit.experiments.kind`:
``convex``, ``distributed``, ``curve``, ``deep``, each in its own module) in its own folder,
in parallel processes with ``--jobs``; several seeds run one after another (or batched, where the
kind does that), then the claims, the source's published numbers and the figures.  Each kind's
checkpoints (:mod:`lowbit.experiments.loop`) hold everything needed to continue bit for bit, so
``resume`` after a kill ends with the same metrics as an uninterrupted run (wall time aside).
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import pandas as pd
import torch
import torch.distributed as dist
from tqdm import tqdm

from ..distributed import process_group
from ..plots import plot_run
from . import convex, curve, deep, distributed  # noqa: F401  (each registers its kind)
from .claims import CLAIMS
from .config import RunConfig, expand
from .kind import KINDS
from .published import compare, markdown
from .results import RunFolder, atomic_write, environment, summary_over_seeds


# -- the runner -------------------------------------------------------------------------------------------
# kinds that run all of ``seeds`` in one batched tensor program; the others run them one by one
def _run_one(args) -> tuple[str, dict]:
    label, cfg_dict, path, resume, stop_after = args
    cfg = RunConfig.model_validate(cfg_dict)
    folder = RunFolder(path)
    if resume and folder.done_everywhere():
        return label, _broadcast(folder.read_json("summary.json") if folder.writer else None)
    folder.write_yaml("config.yaml", cfg.model_dump())
    if cfg.seeds > 1 and not KINDS[cfg.kind].batched_seeds:
        summary = _seed_by_seed(cfg, folder, resume=resume, stop_after=stop_after)
    else:
        summary = KINDS[cfg.kind].run(cfg, folder, resume=resume, stop_after=stop_after)
    summary = {"label": label, **summary, "config": cfg.model_dump(exclude={"sweep", "quick"})}
    folder.write_json("summary.json", summary)
    return label, summary


def _seed_by_seed(cfg: RunConfig, folder: RunFolder, *, resume: bool, stop_after: int | None) -> dict:
    """``cfg.seeds`` runs one after another, each in ``seeds/seed=<s>/`` (so each resumes on its
    own); the run's metrics are theirs with a ``seed`` column, its summary their mean."""
    seeds = [cfg.seed + k for k in range(cfg.seeds)]
    summaries, frames = [], []
    for s in seeds:
        sub = RunFolder(folder.path / "seeds" / f"seed={s}")
        one = cfg.model_copy(update={"seed": s, "seeds": 1})
        if resume and sub.done_everywhere():
            summ = sub.read_json("summary.json") if sub.writer else None
        else:
            summ = KINDS[cfg.kind].run(one, sub, resume=resume, stop_after=stop_after)
            sub.write_json("summary.json", summ)
        summaries.append(summ)
        if sub.writer:
            frames.append(sub.metrics().assign(seed=s))
    if folder.writer:
        folder.write_metrics(pd.concat(frames, ignore_index=True).to_dict("records"))
    return summary_over_seeds(summaries, seeds) if folder.writer else summaries[0]


def run(cfg: RunConfig, out, *, resume: bool = False, jobs: int = 1, stop_after: int | None = None,
        quiet: bool = False) -> dict:
    """Run ``cfg`` (every sub-run of its sweep) into the folder ``out``; returns the summary."""
    folder = RunFolder(out)
    folder.write_yaml("config.yaml", cfg.model_dump())
    folder.write_json("env.json", environment())
    runs = expand(cfg)
    tasks = []
    for label, sub in runs:
        path = folder.path if not label else folder.sub(label).path
        tasks.append((label, sub.model_dump(), str(path), resume, stop_after))
    results: dict[str, dict] = {}
    if jobs > 1 and folder.world > 1:
        raise ValueError("--jobs runs sub-runs in parallel processes; under torchrun every process takes part "
                         "in each sub-run: leave --jobs at 1")
    if jobs > 1 and len(tasks) > 1:
        threads = max(1, torch.get_num_threads() // jobs)  # the cores shared out, not oversubscribed
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), initializer=torch.set_num_threads,
                                 initargs=(threads,)) as ex:
            for label, s in ex.map(_run_one, tasks):
                results[label] = s
    else:
        bar = _progress(len(tasks), quiet)
        for t in tasks:
            label, s = _run_one(t)
            results[label] = s
            bar(label)
    summary = {"name": cfg.name, "kind": cfg.kind, "runs": [results[t[0]] for t in tasks]}
    if not folder.writer:  # results, claims and figures are rank 0's
        return summary
    if cfg.claims:
        summary["claims"] = CLAIMS[cfg.claims](cfg, folder, summary)
    if cfg.published:
        summary["published"] = compare(cfg, folder, summary)
        table, title = folder.path / "table.md", "## The source's numbers beside lowbit's\n"
        head = table.read_text().split(title)[0].rstrip() + "\n\n" if table.exists() else ""
        atomic_write(table, (head.lstrip() + title + "\n" + markdown(summary["published"])).encode())
    folder.write_json("summary.json", summary)
    summary["figures"] = plot_run(folder.path)
    folder.write_json("summary.json", summary)
    return summary


def _broadcast(obj):
    """rank 0's ``obj`` on every rank (itself outside a multi-process run)."""
    if process_group.world_size() == 1:
        return obj

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _progress(total: int, quiet: bool):
    if quiet or total <= 1:
        return lambda label: None
    bar = tqdm(total=total, desc="runs", leave=False)

    def step(label):
        bar.set_postfix_str(label[:40])
        bar.update(1)
        if bar.n >= total:
            bar.close()

    return step
