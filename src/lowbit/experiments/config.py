"""The validated configuration of a run.

A run is data: a YAML file (or a named experiment) plus ``key=value`` overrides with dotted keys
(``optim.lr=0.1``).  Every section rejects unknown keys with an error that names the key and
suggests the closest valid one.  ``sweep`` maps dotted keys to lists of values: the run becomes
one sub-run per combination; ``extra_runs`` adds sub-runs.  An override of a swept or varied key
narrows the sub-runs to the value it gives (``quant.codec=fp8`` runs fp8 alone).  Codec and format
names are checked for every sub-run before anything runs.  ``quick`` holds overrides applied by
``--quick``.
"""

from __future__ import annotations

import copy
import difflib
import itertools
from typing import Any, Literal

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..compress import compressor_names, get_compressor
from ..formats import get_format
from .published import within


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message says which and what would be valid."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    source: Literal["synthetic", "libsvm"] = "synthetic"
    name: str = "a5a"  # LIBSVM dataset name (source: libsvm)
    n_samples: int = 2000  # synthetic
    n_features: int = 20  # synthetic
    cond: float = 20.0  # synthetic: condition number of AᵀA/N
    scale: float = 1.0  # multiply the features (sets the gradients' magnitude against a format's grid)
    separable: bool = False
    normalize: bool = False  # L2-normalize rows (the IntSGD experiments)
    test_fraction: float = 0.2  # held-out share (shuffled with ``seed``); 0 keeps every row for training
    train_fraction: float = Field(1.0, gt=0, le=1)  # keep this share of the training rows (miniature runs)
    seed: int = 0


class ProblemConfig(_Strict):
    lam: float = 1e-3  # l2 regularization λ


class OptimConfig(_Strict):
    name: Literal["sgd", "adam", "sag", "saga", "svrg", "halp"] = "sgd"
    lr: float = 0.05
    batch_size: int = 1
    momentum: float = 0.0
    schedule: Literal["constant", "diminishing"] = "constant"  # diminishing: lr·γ/(γ + k)
    gamma: float = 100.0
    T_epochs: float = 1.0  # SVRG/HALP epoch length, in passes over the data
    bits: int = 8  # HALP
    halp_mu: float | None = None  # HALP's μ; default: the problem's strong convexity λ
    init: Literal["zero", "pass"] = "zero"  # SAG/SAGA table


class QuantConfig(_Strict):
    codec: str = "fp32"  # a format name (cast), a compressor name, or fp32 for none
    options: dict[str, Any] = {}  # options of a named compressor, e.g. {levels: 4} for qsgd
    rounding: Literal["nearest", "stochastic"] = "nearest"
    compensate: Literal["none", "fixed", "adaptive"] = "none"
    q_min: float | None = None  # for compensate: fixed

    @field_validator("codec")
    @classmethod
    def _known_codec(cls, v):
        if v.strip().lower() in compressor_names():
            return v
        try:
            get_format(v)
        except ValueError as e:
            raise ValueError(f"unknown codec {v!r}: a compressor name ({', '.join(compressor_names())}) or a number "
                             f"format — {e}") from None
        return v

    @model_validator(mode="after")
    def _known_options(self):
        if self.options and self.codec.strip().lower() in compressor_names():
            try:
                get_compressor(self.codec, **self.options)  # unknown options and bad values fail here, not mid-run
            except (TypeError, ValueError) as e:
                raise ValueError(f"quant.options for {self.codec}: {e}") from None
        return self

class DistConfig(_Strict):
    workers: int = 12
    method: Literal["l-svrg", "vr-intdiana", "vr-natdiana", "vr-hintdiana", "diana", "intdiana"] = "vr-intdiana"
    batch_divisor: int = 20  # b = ⌊N/(batch_divisor·n)⌋ per worker
    iterations: int = 5020
    alpha_rule: Literal["adaptive", "moving_avg", "moving_avg_const"] = "adaptive"
    sigma_q: float = 1e-3
    beta: float = 0.0
    bits: Literal[8, 16, 32, 64] | None = None  # IntSGD's and HintSGD's integers: a fixed width (each worker
    # clamped to ⌊(2^(b−1)−1)/n⌋; the bucket route of a real run) or None, the width agreed from the data;
    # the methods that send no integers (l-svrg, diana, vr-natdiana) ignore it, so a sweep may set it
    streams: Literal["batched", "per-worker"] = "batched"  # simulated codec randomness; per-worker = real runs'
    backend: Literal["auto", "gloo", "nccl"] = "auto"  # under torchrun: nccl with CUDA, else gloo
    timeout: float = 300.0  # seconds a collective waits for a peer before the run fails naming it


class DeepConfig(_Strict):
    model: str = "resnet18"  # lowbit models: fc, lenet, cifarnet, resnet18, resnet50, vae, btcvae
    model_options: dict[str, Any] = {}  # e.g. {width: 16, stem: imagenet}
    dataset: str = "synthetic-cifar10"  # lowbit.data.images: mnist, fashion-mnist, cifar10, mnist-5k, …
    train_size: int | None = None  # first N training images (None: all)
    test_size: int | None = None
    batch_size: int = 128  # total over the workers
    workers: int = 1  # workers: each computes its share of the batch, compressed per worker (simulated,
    # or one per process under torchrun: DDP with lowbit's communication hook, the same numbers)
    exchange: Literal["parameter", "bucket"] = "parameter"  # workers > 1: one message per parameter, or
    # per DDP bucket (the fast path of a real run; the simulation lays the buckets out as DDP does)
    bucket_mb: float = 25.0  # DDP's bucket_cap_mb, for exchange: bucket
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    milestones: list[float] = []  # epochs where lr is multiplied by lr_decay
    lr_decay: float = 0.1
    epoch_decay: float = 1.0  # lr multiplied by this after every epoch (the ISGQ experiments: 0.98)
    augment: bool = True  # random crop (pad 4) and horizontal flip, on the device, in batch
    crop: int | None = None  # crop size (CifarNet: 24); test images are centre-cropped
    device: str = "auto"  # auto: cuda when present
    channels_last: bool = False


class PrecisionConfig(_Strict):
    """Rounding inside the model (deep runs): layer outputs forward, errors backward, weights and
    optimizer state (lowbit.nn.lower, lowbit.optim.LowPrecision); None leaves a place in full precision."""

    activations: str | None = None  # format of the chosen layers' outputs, forward
    errors: str | None = None  # format of the errors flowing back into them
    layers: list[str] = ["Conv2d", "Linear"]  # torch.nn layer types whose outputs are rounded
    rounding: Literal["nearest", "stochastic", "zero"] = "nearest"  # activations
    error_rounding: Literal["nearest", "stochastic", "zero"] = "stochastic"
    weights: str | None = None  # the weights' format, rounded after each step
    state: str | None = None  # the optimizer's state buffers (momentum)
    weight_rounding: Literal["nearest", "stochastic", "zero"] = "stochastic"

    @field_validator("activations", "errors", "weights", "state")
    @classmethod
    def _known_format(cls, v):
        if v is not None:
            get_format(v)  # raises, naming the known formats
        return v

    @field_validator("layers")
    @classmethod
    def _known_layers(cls, v):
        for name in v:
            if not (isinstance(getattr(torch.nn, name, None), type) and issubclass(getattr(torch.nn, name), torch.nn.Module)):
                raise ValueError(f"precision.layers: {name!r} is not a torch.nn layer type")
        return v

    @property
    def in_model(self) -> bool:
        return self.activations is not None or self.errors is not None

    @property
    def low_precision_optimizer(self) -> bool:
        return self.weights is not None or self.state is not None


class CurveConfig(_Strict):
    function: Literal["exp"] = "exp"  # g(x) = exp(rate·x)
    rate: float = -0.2
    x_max: float = 60.0
    points: int = 601
    formats: list[str] = ["float32", "float16", "fp8", "fp4"]

    @field_validator("formats")
    @classmethod
    def _known_formats(cls, v):
        for name in v:
            get_format(name)  # raises, naming the known formats
        return v


class Published(_Strict):
    """A number the source reports, and where, beside the lowbit quantity it is compared with."""

    quantity: str  # what is compared (the claim checker names it)
    source: str  # where it is reported: paper, table or figure
    value: float | str  # the reported number (or ordering)
    tolerance: float | str | None = None  # how close counts as agreement
    note: str = ""  # e.g. what differs here (substitute data, shorter run)

    @field_validator("tolerance")
    @classmethod
    def _known_tolerance(cls, v):
        within(1.0, 1.0, v)  # raises on an unknown form
        return v


class RunConfig(_Strict):
    name: str = "run"
    kind: Literal["convex", "distributed", "curve", "deep"] = "convex"
    seed: int = 0
    seeds: int = Field(1, ge=1)  # runs with seeds seed, seed+1, …; results show their mean and a band
    published: list[Published] = []  # the source's own numbers, compared with the measured ones
    epochs: float = 3.0
    log_every: int = 100  # steps between metric rows
    checkpoint_every: int = 2000  # steps between checkpoints
    data: DataConfig = DataConfig()
    problem: ProblemConfig = ProblemConfig()
    optim: OptimConfig = OptimConfig()
    quant: QuantConfig = QuantConfig()
    dist: DistConfig = DistConfig()
    curve: CurveConfig = CurveConfig()
    deep: DeepConfig = DeepConfig()
    precision: PrecisionConfig = PrecisionConfig()
    theory: bool = False  # record the Theorem 3 bound beside the measured curve (convex, sgd)
    sweep: dict[str, list[Any]] = {}
    extra_runs: list[dict[str, Any]] = []  # more sub-runs: each a mapping of dotted overrides
    quick: dict[str, Any] = {}
    claims: str | None = None  # name of the claim checker (reproductions)
    figure: str | None = None  # figure layout; default by kind


def _check_keys(data: Any, model: type[BaseModel], prefix: str = "") -> None:
    if not isinstance(data, dict):
        return
    fields = model.model_fields
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
            raise ConfigError(f"unknown config key '{prefix}{key}'{hint} Valid keys here: {', '.join(fields)}")
        ann = fields[key].annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            _check_keys(value, ann, f"{prefix}{key}.")


def _check_dotted(key: str) -> None:
    parts = key.split(".")
    model: type[BaseModel] = RunConfig
    for i, part in enumerate(parts):
        fields = model.model_fields
        if part not in fields:
            close = difflib.get_close_matches(part, list(fields), n=1)
            where = ".".join(parts[:i])
            hint = f"; did you mean '{(where + '.') if where else ''}{close[0]}'?" if close else ""
            raise ConfigError(f"unknown config key '{key}'{hint}")
        ann = fields[part].annotation
        if i < len(parts) - 1:
            if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
                raise ConfigError(f"'{'.'.join(parts[: i + 1])}' has no sub-keys (in '{key}')")
            model = ann


def set_dotted(d: dict, key: str, value: Any) -> None:
    _check_dotted(key)
    parts = key.split(".")
    cur = d
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not key=value")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw) if raw.strip() else ""


def make_config(data: dict | None = None, overrides: list[str] = (), *, quick: bool = False) -> RunConfig:
    """A validated RunConfig from a mapping (e.g. a YAML file), ``key=value`` overrides and the
    file's ``quick`` section (applied first, when ``quick``)."""
    d = copy.deepcopy(data or {})
    _check_keys(d, RunConfig)
    if quick:
        for k, v in (d.get("quick") or {}).items():
            set_dotted(d, k, v)
    for text in overrides:
        k, v = parse_override(text)
        _check_dotted(k)
        if not _narrow(d, k, v):
            set_dotted(d, k, v)
    cfg = _validated(d)
    for k in cfg.sweep:
        _check_dotted(k)
    for extra in cfg.extra_runs:
        for k in extra:
            _check_dotted(k)
    expand(cfg)  # every sub-run's values are checked before anything runs
    return cfg


def _validated(d: dict) -> RunConfig:
    try:
        return RunConfig.model_validate(d)
    except ValidationError as e:
        raise ConfigError(f"invalid configuration: {_messages(e)}") from None


def _messages(e: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors())


def _is_list_field(key: str) -> bool:
    model: type[BaseModel] = RunConfig
    parts = key.split(".")
    for part in parts[:-1]:
        model = model.model_fields[part].annotation
    ann = model.model_fields[parts[-1]].annotation
    return getattr(ann, "__origin__", None) is list


def _narrow(d: dict, key: str, value: Any) -> bool:
    """An override of a key that the config sweeps or varies in ``extra_runs`` narrows the runs to
    the value it gives: the sweep over ``key`` becomes [value] (a list value, for a key that is not
    itself a list: those values), and the extra runs that set ``key`` to another value are dropped.
    Returns whether ``value`` was a list of sweep values (then it is no value of the key itself)."""
    sweep, extras = d.get("sweep") or {}, d.get("extra_runs") or []
    several = isinstance(value, list) and not _is_list_field(key) and key in sweep
    values = value if several else [value]
    if key in sweep:
        sweep[key] = values
    if any(key in e for e in extras):
        d["extra_runs"] = [e for e in extras if key not in e or e[key] in values]
    return several


def load_yaml(path) -> dict:
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file holds a mapping of keys to values")
    return data


def expand(cfg: RunConfig) -> list[tuple[str, RunConfig]]:
    """(label, config) for every combination of the sweep; one ('', cfg) without a sweep."""
    if not cfg.sweep and not cfg.extra_runs:
        return [("", cfg)]
    keys = list(cfg.sweep)
    combos = [dict(zip(keys, values)) for values in itertools.product(*(cfg.sweep[k] for k in keys))] if keys else []
    out = []
    for overrides in combos + list(cfg.extra_runs):
        d = cfg.model_dump()
        d["sweep"], d["extra_runs"] = {}, []
        for k, v in overrides.items():
            set_dotted(d, k, v)
        label = ",".join(f"{k.split('.')[-1]}={v}" for k, v in overrides.items())
        try:
            out.append((label, RunConfig.model_validate(d)))
        except ValidationError as e:
            raise ConfigError(f"invalid configuration in sub-run {label}: {_messages(e)}") from None
    return out
