"""What the distributed tests and their worker processes share: codecs, model, data."""

import os

import torch

from lowbit import get_compressor
from lowbit.compress import ErrorFeedback, Shifted

SEED = 11
BACKEND = os.environ.get("LOWBIT_TEST_BACKEND", "gloo")  # nccl: one GPU per rank


def device(rank: int = 0) -> torch.device:
    return torch.device(f"cuda:{rank}") if BACKEND == "nccl" else torch.device("cpu")

STEPS = 3
LR = 0.2
BUCKET_MB = 0.00015  # 157 bytes: after the first step DDP lays the 4 parameters out in 2 buckets of 2
EXACT = {"qsgd": 20, "ef-signsgd": 20}  # these also send 1-D parameters exactly

CODECS = {
    "identity": lambda n: get_compressor("identity"),
    "cast-fp8": lambda n: get_compressor("cast", format="fp8"),
    "cast-fp4-stochastic-block": lambda n: get_compressor("cast", format="fp4", rounding="stochastic", scaling="block"),
    "intsgd-int8": lambda n: get_compressor("intsgd", alpha=50.0, bits=8, n_workers=n),
    "intsgd-int16-adaptive": lambda n: get_compressor("intsgd", bits=16, n_workers=n, rule="moving_avg_const",
                                                      sigma_sq=1e-4),  # per-tensor α_j = √d_j/σ, int16 summed as int32
    "intsgd-auto": lambda n: get_compressor("intsgd", alpha=1e4, n_workers=n),
    "hintsgd": lambda n: get_compressor("hintsgd", n_workers=n),
    "hintsgd-int8": lambda n: get_compressor("hintsgd", bits=8, n_workers=n),  # bucketed: scales agreed first
    "natural": lambda n: get_compressor("natural"),
    "qsgd": lambda n: get_compressor("qsgd", levels=4),
    "qsgd-elias": lambda n: get_compressor("qsgd", levels=2, coding="elias"),
    "terngrad": lambda n: get_compressor("terngrad"),
    "onebit": lambda n: get_compressor("onebit"),
    "signsgd": lambda n: get_compressor("signsgd"),
    "ef-signsgd": lambda n: ErrorFeedback(get_compressor("signsgd")),
    "topk": lambda n: get_compressor("topk", ratio=0.1),
    "randk": lambda n: get_compressor("randk", ratio=0.25),
    "powersgd": lambda n: get_compressor("powersgd", rank=2),
    "shifted-qsgd": lambda n: Shifted(get_compressor("qsgd", levels=4)),
}


SCATTER = {  # the compressed reduce-scatter mode: the mean is coded twice
    "cast-fp16": lambda n: get_compressor("cast", format="fp16"),
    "qsgd": lambda n: get_compressor("qsgd", levels=4),
    "ef-signsgd": lambda n: ErrorFeedback(get_compressor("signsgd")),
}


PER_PARAMETER = ("qsgd", "intsgd-int8", "hintsgd-int8", "ef-signsgd")  # these also run with per_parameter=True
AHEAD = ("qsgd", "natural", "intsgd-int8")  # these also run with draw_ahead=True: the same parameters


RESUMED = {  # deterministic codecs: a restarted DDP lays its buckets out afresh, so a restart
    # resumes bit for bit where the randomness does not depend on the layout
    "ef-signsgd": lambda n: ErrorFeedback(get_compressor("signsgd")),
    "intsgd-int16-adaptive-nearest": lambda n: get_compressor("intsgd", bits=16, n_workers=n, rounding="nearest",
                                                              rule="moving_avg_const", sigma_sq=1e-4),
}


def make_model() -> torch.nn.Module:
    torch.manual_seed(SEED)
    return torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))


def worker_batch(worker: int, step: int):
    g = torch.Generator().manual_seed(1000 * worker + step)
    x = torch.randn(8, 12, generator=g)
    return x, torch.randn(8, 3, generator=g)


def loss_fn(out, y):
    return ((out - y) ** 2).mean()


def diana_problem(n: int):
    from lowbit.data import synthetic
    from lowbit.problems import LogisticRegression

    A, y = synthetic.logistic(480, 8, cond=10.0, seed=3)
    dev = device(0)
    split = LogisticRegression(A.double().to(dev), y.double().to(dev), 1e-2).split(n)
    return split


def diana_optimizer(split, x, cluster):
    from lowbit.optim import DIANA, diana_stepsize

    P = split.problem()
    lr = diana_stepsize(P.L, split.batch_smoothness(), split.n)
    return DIANA([x], lr=lr, n_workers=split.n, local_n=split.m, batch_size=4, vr=True, seed=SEED, cluster=cluster)


DIANA_STEPS = 600
DIANA_CODECS = {  # (codec, steps), each on the bucket route; the automatic widths agree on their container
    "vr-intdiana": (lambda n: get_compressor("intsgd", n_workers=n, rule="adaptive", sigma_sq=1e-6), DIANA_STEPS),
    "vr-intdiana-int16": (lambda n: get_compressor("intsgd", bits=16, n_workers=n, rule="adaptive", sigma_sq=1e-6), 40),
    "vr-natdiana": (lambda n: get_compressor("natural"), 40),
    "vr-hintdiana": (lambda n: get_compressor("hintsgd", n_workers=n), 40),
    "vr-hintdiana-int8": (lambda n: get_compressor("hintsgd", bits=8, n_workers=n), 40),
    "vr-qsgd-diana": (lambda n: get_compressor("qsgd", levels=4), 40),
}
