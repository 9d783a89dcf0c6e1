"""The deep lab: models, image data readers, the on-device training loop, its quick reproductions."""

import gzip
import io
import json
import pickle
import struct
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import torch

from lowbit.data.images import load_images, read_idx
from lowbit.data.store import CorruptDataError
from lowbit.experiments import make_config, run
from lowbit.data.augment import augment
from lowbit.experiments.loop import Stop
from lowbit.models import PAPER_COUNTS, count_parameters, get_model


def test_parameter_counts():
    exact = {"fc": 784 * 1000 + 1000 + 1000 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10,
             "lenet": 5 * 5 * 32 + 32 + 5 * 5 * 32 * 64 + 64 + 3136 * 512 + 512 + 512 * 10 + 10,
             "cifarnet": 5 * 5 * 3 * 64 + 64 + 5 * 5 * 64 * 64 + 64 + 2304 * 384 + 384 + 384 * 192 + 192 + 192 * 10 + 10}
    for name, n in exact.items():
        got = count_parameters(get_model(name))
        assert got == n
        assert abs(got - PAPER_COUNTS[name]) / PAPER_COUNTS[name] < 0.05  # the ISGQ paper's rounded counts
    assert count_parameters(get_model("resnet18")) == 11_173_962  # the usual CIFAR ResNet-18
    x = torch.randn(2, 3, 32, 32)
    assert get_model("resnet50", stem="imagenet", width=8)(x).shape == (2, 10)
    assert get_model("lenet")(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert get_model("cifarnet")(torch.randn(2, 3, 24, 24)).shape == (2, 10)


def _idx(arr: np.ndarray) -> bytes:
    head = bytes([0, 0, 8, arr.ndim]) + b"".join(struct.pack(">i", s) for s in arr.shape)
    return gzip.compress(head + arr.astype(np.uint8).tobytes())


def test_idx_and_cifar_readers(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    (tmp_path / "mnist").mkdir()
    xtr, ytr = rng.integers(0, 256, (12, 28, 28)), rng.integers(0, 10, 12)
    xte, yte = rng.integers(0, 256, (5, 28, 28)), rng.integers(0, 10, 5)
    for name, a in [("train-images-idx3-ubyte.gz", xtr), ("train-labels-idx1-ubyte.gz", ytr),
                    ("t10k-images-idx3-ubyte.gz", xte), ("t10k-labels-idx1-ubyte.gz", yte)]:
        (tmp_path / "mnist" / name).write_bytes(_idx(a))
    monkeypatch.setenv("LOWBIT_DATA", str(tmp_path))
    monkeypatch.setenv("LOWBIT_OFFLINE", "1")
    d = load_images("mnist", normalize=False)
    assert d.train_x.shape == (12, 1, 28, 28) and d.test_x.shape == (5, 1, 28, 28)
    assert torch.equal((d.train_x[:, 0] * 255).round().to(torch.int64), torch.from_numpy(xtr))
    assert torch.equal(d.test_y, torch.from_numpy(yte))
    with pytest.raises(Exception, match="truncated"):
        read_idx(gzip.decompress(_idx(xtr))[:-7])
    # a file that does not match the folder's SHA256SUMS is refused by name
    (tmp_path / "SHA256SUMS").write_text("0" * 64 + "  mnist/train-images-idx3-ubyte.gz\n")
    with pytest.raises(CorruptDataError, match="train-images"):
        load_images("mnist")
    (tmp_path / "SHA256SUMS").unlink()

    (tmp_path / "cifar-10").mkdir()
    buf = io.BytesIO()
    batches = {}
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            b = {b"data": rng.integers(0, 256, (4, 3072)).astype(np.uint8), b"labels": list(rng.integers(0, 10, 4))}
            batches[name] = b
            raw = pickle.dumps(b)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    (tmp_path / "cifar-10" / "cifar-10-python.tar.gz").write_bytes(buf.getvalue())
    c = load_images("cifar10", normalize=False)
    assert c.train_x.shape == (20, 3, 32, 32) and c.test_x.shape == (4, 3, 32, 32)
    want = batches["data_batch_2"][b"data"][1].reshape(3, 32, 32)
    assert torch.equal((c.train_x[5] * 255).round().to(torch.uint8), torch.from_numpy(want))


def test_augment_crops_a_window_and_flips():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    out = augment(x, g, pad=2)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for k in range(2):  # each output is a window of the padded image, possibly mirrored
        windows = [padded[k, :, i:i + 8, j:j + 8] for i in range(5) for j in range(5)]
        assert any(torch.equal(out[k], w) or torch.equal(out[k], w.flip(2)) for w in windows)


def _tiny(**over):
    base = {"name": "tiny", "kind": "deep", "epochs": 3,
            "deep": {"model": "fc", "model_options": {"widths": [32]}, "dataset": "digits", "batch_size": 32,
                     "lr": 0.05, "augment": False, "device": "cpu"}}
    return make_config(base, [f"{k}={v}" for k, v in over.items()])


def test_simulated_workers_with_identity_equal_one_worker(tmp_path):
    """Mean of the workers' gradients over equal shares = the full batch gradient (no BatchNorm)."""
    a = run(_tiny(), tmp_path / "a", quiet=True)["runs"][0]["final"]
    b = run(_tiny(**{"deep.workers": 4, "quant.codec": "identity"}), tmp_path / "b", quiet=True)["runs"][0]["final"]
    assert abs(a["train_loss"] - b["train_loss"]) < 1e-5 and a["test_accuracy"] == b["test_accuracy"]
    assert b["bits"] > 0 and a["test_accuracy"] > 0.8  # it learns the digits


def test_deep_run_resumes_identically(tmp_path):
    cfg = _tiny(**{"quant.codec": "fp8", "quant.rounding": "stochastic"})
    whole = run(cfg, tmp_path / "whole", quiet=True)["runs"][0]["final"]
    with pytest.raises(Stop):
        run(cfg, tmp_path / "cut", quiet=True, stop_after=1)
    resumed = run(cfg, tmp_path / "cut", resume=True, quiet=True)["runs"][0]["final"]
    for k in ("train_loss", "test_accuracy", "q", "bits"):
        assert resumed[k] == whole[k], k
    layers = [k for k in whole if k.startswith("q[")]  # one column per parameter: where the shrinkage happens
    assert len(layers) >= 4 and all(0 < whole[k] <= 1.5 for k in layers) and resumed[layers[0]] == whole[layers[0]]


@pytest.mark.parametrize("method", ["svrg", "halp"])
def test_variance_reduced_deep_runs_learn_and_resume_identically(method, tmp_path):
    over = {"optim.name": method, "optim.T_epochs": 1.0, "optim.bits": 4, "optim.halp_mu": 5.0, "deep.lr": 0.1}
    whole = run(_tiny(**over), tmp_path / "whole", quiet=True)["runs"][0]["final"]
    assert whole["test_accuracy"] > 0.7
    with pytest.raises(Stop):
        run(_tiny(**over), tmp_path / "cut", quiet=True, stop_after=1)
    resumed = run(_tiny(**over), tmp_path / "cut", resume=True, quiet=True)["runs"][0]["final"]
    assert resumed["train_loss"] == whole["train_loss"] and resumed["test_accuracy"] == whole["test_accuracy"]


def test_variance_reduced_deep_runs_refuse_what_they_cannot_do(tmp_path):
    with pytest.raises(ValueError, match="one worker, no codec"):
        run(_tiny(**{"optim.name": "halp", "quant.codec": "fp8"}), tmp_path, quiet=True)


@pytest.mark.parametrize("name", ["slowdown-resnet", "intsgd-resnet", "intsgd-vae", "isgq-mnist", "halp-resnet"])
def test_quick_reproductions_run_from_the_cli(name, tmp_path):
    # every run of the quick configuration, end to end, on fewer images and one epoch (CLI overrides)
    smaller = ["epochs=1"] + ([] if name == "intsgd-vae" else ["deep.train_size=256", "deep.test_size=128"])
    r = subprocess.run([sys.executable, "-m", "lowbit", "reproduce", name, "--quick", "--quiet", "--out",
                        str(tmp_path), *smaller], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["claims"] and all({"name", "holds", "detail"} <= set(c) for c in s["claims"])
    assert (tmp_path / "figures" / "curves.png").exists()


def test_rounding_inside_the_model_from_the_cli(tmp_path):
    """slowdown-inmodel's quick variant: every place of rounding is a metrics column, and the
    runs without rounding in the model keep the model's numbers (the fp32 run equals a plain run)."""
    r = subprocess.run([sys.executable, "-m", "lowbit", "reproduce", "slowdown-inmodel", "--quick", "--quiet", "--out",
                        str(tmp_path), "epochs=2"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    import pandas as pd

    both = pd.read_csv(tmp_path / "runs" / "activations=fp8,errors=fp8" / "metrics.csv")
    places = [c for c in both if c.startswith(("q_forward[", "q_backward["))]
    assert len(places) == 2 * 4 and both[places].notna().all().all()  # the FC net's four Linear layers
    weights = pd.read_csv(tmp_path / "runs" / "weights=bf16,state=bf16" / "metrics.csv")
    assert weights["q_update"].notna().all()
    plain = run(_tiny(**{"deep.model": "fc", "deep.model_options": {}, "deep.dataset": "digits", "epochs": 2,
                         "deep.batch_size": 64, "deep.lr": 0.05, "deep.momentum": 0.9, "deep.augment": False}),
                tmp_path / "plain", quiet=True)
    fp32 = pd.read_csv(tmp_path / "runs" / "activations=None" / "metrics.csv")
    assert fp32["train_loss"].iloc[-1] == plain["runs"][0]["final"]["train_loss"]


def test_precision_settings_are_checked_before_anything_runs():
    from lowbit.experiments import ConfigError, make_config

    with pytest.raises(ConfigError, match="fp5"):
        make_config({"kind": "deep", "precision": {"errors": "fp5"}})
    with pytest.raises(ConfigError, match="not a torch.nn layer"):
        make_config({"kind": "deep", "precision": {"layers": ["Linaer"]}})
