"""Real multi-process runs (gloo on CPU) against the simulation with the same seeds.

The worker processes are started as torchrun starts them (RANK, WORLD_SIZE, MASTER_ADDR and
MASTER_PORT in the environment) from tests/dist_worker.py."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

import dist_common as C
from lowbit.distributed import SimulatedCluster, SimulatedDataParallel
from lowbit.distributed.bucket import bucketable

HERE = os.path.dirname(__file__)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(world: int, *args, timeout_env: str = "60"):
    port = _port()
    procs = []
    for r in range(world):
        env = dict(os.environ, RANK=str(r), WORLD_SIZE=str(world), LOCAL_RANK=str(r), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), LOWBIT_DIST_TIMEOUT=timeout_env, OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen([sys.executable, os.path.join(HERE, "dist_worker.py"), *args], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def _simulate(label: str, n: int, buckets=None):
    """The same DDP training, simulated: per-worker gradients, coded in the DDP run's buckets."""
    dev = C.device(0)
    model = C.make_model().to(dev)
    params = list(model.parameters())
    sdp = SimulatedDataParallel(params, n, C.CODECS[label](n), seed=C.SEED, buckets=buckets,
                                exact_below=C.EXACT.get(label, 0))
    opt = torch.optim.SGD(params, lr=C.LR)
    for k in range(C.STEPS):
        per_worker = []
        for w in range(n):
            x, y = (t.to(dev) for t in C.worker_batch(w, k))
            model.zero_grad()
            C.loss_fn(model(x), y).backward()
            per_worker.append([p.grad.detach().clone() for p in params])
        sdp.set_grads([torch.stack([g[j] for g in per_worker]) for j in range(len(params))])
        opt.step()
    return [p.detach().cpu() for p in params], sdp.bits_per_worker


def _simulate_diana(n: int, label: str):
    split = C.diana_problem(n)
    x = torch.zeros(split.A.shape[2], dtype=torch.float64, device=split.A.device)
    make, steps = C.DIANA_CODECS[label]
    cl = SimulatedCluster(n, make(n), seed=C.SEED)
    opt = C.diana_optimizer(split, x, cl)
    P = split.problem()
    sub = []
    for _ in range(steps):
        opt.step(split.grads)
        sub.append(P.suboptimality(x))
    return x.cpu(), sub, cl


@pytest.mark.parametrize("world", [2, 4])
def test_ddp_hooks_and_diana_match_the_simulation(world, tmp_path):
    """gloo on CPU (CI); with LOWBIT_TEST_BACKEND=nccl, one GPU per rank."""
    if C.BACKEND == "nccl" and torch.cuda.device_count() < world:
        pytest.skip(f"nccl needs {world} GPUs, {torch.cuda.device_count()} present")
    out = str(tmp_path / "res")
    procs = _launch(world, "equiv", out)
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    res = [torch.load(f"{out}.{r}.pt", weights_only=False) for r in range(world)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' thread count: the same float sums
    try:
        for label in C.CODECS:
            layouts = res[0][label]["buckets"]
            if bucketable(C.CODECS[label](world)):  # coded bucket by bucket, in several buckets
                assert layouts and max(len(lay) for _, lay in layouts) > 1, (label, layouts)
            params, bits = _simulate(label, world, layouts)
            for r in range(world):
                got = res[r][label]
                for a, b in zip(got["params"], params):
                    assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), (label, r, (a - b).abs().max())
                assert 8 * got["bytes"] == bits[r], (label, r, got["bytes"], bits[r] / 8)
        for label in C.RESUMED:  # a restart from state dicts (memory, α, generators) changes nothing
            for r in range(world):
                for a, b in zip(res[r][f"resumed {label} 1"], res[r][f"resumed {label} None"]):
                    assert torch.equal(a, b), (label, r, (a - b).abs().max())
        exact_params, _ = _simulate("identity", world)
        for label in C.SCATTER:
            got = [res[r]["scatter " + label]["params"] for r in range(world)]
            for r in range(1, world):  # every rank decodes the same chunks: the same parameters
                assert all(torch.equal(a, b) for a, b in zip(got[0], got[r])), label
            assert all(torch.isfinite(a).all() for a in got[0])
            if label == "cast-fp16":  # coded twice in fp16: close to the exact mean's training
                for a, b in zip(got[0], exact_params):
                    assert torch.allclose(a, b, rtol=1e-2, atol=1e-3), (a - b).abs().max()
        for label in C.PER_PARAMETER:  # DistributedCluster's bucket route, one message per parameter
            params, bits = _simulate(label, world)
            for r in range(world):
                got = res[r]["per-parameter " + label]
                for a, b in zip(got["params"], params):
                    assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), (label, r, (a - b).abs().max())
                assert 8 * got["bytes"] == bits[r], (label, r, got["bytes"], bits[r] / 8)
        for label in C.AHEAD:  # words drawn ahead are the words drawn when needed
            for r in range(world):
                for a, b in zip(res[r]["ahead " + label], res[r][label]["params"]):
                    assert torch.equal(a, b), (label, r, (a - b).abs().max())
        diana = {label: _simulate_diana(world, label) for label in C.DIANA_CODECS}
    finally:
        torch.set_num_threads(threads)
    for label, (x, sub, cl) in diana.items():
        for r in range(world):
            d = res[r][label]
            assert torch.allclose(d["x"], x, rtol=1e-9, atol=1e-12), (label, r, (d["x"] - x).abs().max())
            assert abs(d["subopt"][-1] - sub[-1]) <= 1e-9 * max(1.0, sub[0]) + 1e-14, label
        assert cl._coder is not None, label  # the bucket route (the automatic width: its container agreed after)
    x, sub, _ = diana["vr-intdiana"]
    assert sub[-1] < 1e-3 * sub[0]  # and it converges


def test_a_killed_rank_is_named_and_the_others_exit():
    procs = _launch(3, "kill", timeout_env="30")
    victim = 1
    lines = []
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until the run is under way
        line = procs[victim].stdout.readline()
        lines.append(line)
        if line.startswith("step 5"):
            break
    else:
        pytest.fail("the workers never started: " + "".join(lines[-5:]))
    os.kill(procs[victim].pid, signal.SIGKILL)
    t0 = time.time()
    for r, p in enumerate(procs):
        if r == victim:
            p.wait()
            continue
        try:
            _, err = p.communicate(timeout=45)
        except subprocess.TimeoutExpired:
            p.kill()
            pytest.fail(f"rank {r} still running 45 s after rank {victim} was killed")
        assert p.returncode != 0, f"rank {r} exited 0"
        assert "RankLostError" in err and f"lost rank {victim}" in err, err[-2000:]
    assert time.time() - t0 < 45


CONFIG = """
name: dist-test
kind: distributed
log_every: 20
checkpoint_every: 40
data: {source: synthetic, n_samples: 480, n_features: 8, cond: 10, normalize: true, test_fraction: 0.0}
problem: {lam: 0.001}
dist: {workers: 2, iterations: 120, batch_divisor: 10, backend: gloo, timeout: 60}
sweep:
  dist.method: [vr-intdiana, vr-natdiana]
extra_runs:
  - {dist.method: vr-hintdiana, dist.bits: 8}  # the bucket route with its agreement of scales
"""


def _torchrun(args, env_extra=None, restarts=0):
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env_extra or {}))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "--max-restarts", str(restarts), "-m", "lowbit", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def test_lowbit_run_under_torchrun_matches_the_simulation_and_resumes_after_a_restart(tmp_path):
    import pandas as pd

    cfg = tmp_path / "dist.yaml"
    cfg.write_text(CONFIG)
    sim = subprocess.run([sys.executable, "-m", "lowbit", "run", str(cfg), "dist.streams=per-worker", "--quiet",
                          "--out", str(tmp_path / "sim")], capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert sim.returncode == 0, sim.stderr[-3000:]
    # killed (stopped) at the checkpoint of step 40, restarted by torchrun, resumed from it
    real = _torchrun(["run", str(cfg), "--out", str(tmp_path / "real"), "--stop-after", "40"], restarts=1)
    assert real.returncode == 0, real.stderr[-3000:]
    assert "stopped at step 40" in real.stderr
    runs = sorted(p.name for p in (tmp_path / "sim" / "runs").iterdir())
    assert len(runs) == 3 and runs == sorted(p.name for p in (tmp_path / "real" / "runs").iterdir())
    for method in runs:
        a = pd.read_csv(tmp_path / "sim" / "runs" / method / "metrics.csv")
        b = pd.read_csv(tmp_path / "real" / "runs" / method / "metrics.csv")
        assert list(a["step"]) == list(b["step"])
        assert ((a["suboptimality"] - b["suboptimality"]).abs() <= 1e-9 * a["suboptimality"].abs() + 1e-15).all(), method
        assert (a["bits"] == b["bits"]).all() and (a["grad_computations"] == b["grad_computations"]).all()
    sub = tmp_path / "real" / "runs" / "method=vr-intdiana"
    assert (sub / "checkpoint.rank0.pt").exists() and (sub / "checkpoint.rank1.pt").exists()  # one per rank


DEEP = """
name: deep-test
kind: deep
epochs: 3
seed: 3
deep: {model: fc, model_options: {widths: [32]}, dataset: digits, train_size: 480, test_size: 300, batch_size: 32,
       lr: 0.05, augment: false, device: cpu, workers: 2, bucket_mb: 0.001}
dist: {backend: gloo, timeout: 60}
extra_runs:
  # first, and deterministic: it is the run stopped and restarted (a restarted DDP lays its buckets
  # out afresh, and a stochastic codec's bucket streams follow the layout)
  - {quant.codec: intsgd, quant.options: {bits: 8, n_workers: 2, rounding: nearest, rule: moving_avg_const,
     sigma_sq: 1.0e-4}, deep.exchange: bucket}
  - {quant.codec: qsgd, quant.options: {levels: 4}, deep.exchange: parameter}
  - {quant.codec: qsgd, quant.options: {levels: 4}, deep.exchange: bucket}
"""
# 0.001 MiB: after the first step DDP lays the fc model's 4 parameters out in 2 buckets


def test_deep_run_under_torchrun_is_ddp_with_the_simulations_numbers(tmp_path):
    """`lowbit run` of a deep config under torchrun: one worker per process through DDP and
    lowbit's hook, per parameter or per DDP bucket; the simulation (which lays its buckets out as
    DDP does) gives the same losses, accuracies and bits.  The first run stops at its first
    checkpoint, is restarted by torchrun and resumes."""
    import pandas as pd

    cfg = tmp_path / "deep.yaml"
    cfg.write_text(DEEP)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    sim = subprocess.run([sys.executable, "-m", "lowbit", "run", str(cfg), "--quiet", "--out", str(tmp_path / "sim")],
                         capture_output=True, text=True, timeout=600, env=env)
    assert sim.returncode == 0, sim.stderr[-3000:]
    real = _torchrun(["run", str(cfg), "--out", str(tmp_path / "real"), "--stop-after", "1"], restarts=1)
    assert real.returncode == 0, real.stderr[-3000:]
    assert "stopped at step 1" in real.stderr
    runs = {q.parent.name: q.relative_to(tmp_path / "sim") for q in (tmp_path / "sim").rglob("metrics.csv")}
    assert len(runs) == 3, runs
    for name, run in runs.items():
        a, b = pd.read_csv(tmp_path / "sim" / run), pd.read_csv(tmp_path / "real" / run)
        assert len(a) == 3 and list(a["epoch"]) == list(b["epoch"])
        assert (a["test_accuracy"] == b["test_accuracy"]).all(), name
        assert ((a["train_loss"] - b["train_loss"]).abs() <= 1e-12 * a["train_loss"]).all(), name
        # the restarted run's DDP codes its first step as one bucket again: one finite flag (a byte) fewer per rank
        restarted = "intsgd" in name
        assert (a["bits"] > 0).all() and a["bits"][0] == b["bits"][0], name
        assert ((a["bits"] - b["bits"]).abs() <= (2 * 8 if restarted else 0)).all(), name
    qsgd = [pd.read_csv(tmp_path / "sim" / r) for n, r in sorted(runs.items()) if "qsgd" in n]
    assert not (qsgd[0]["train_loss"] == qsgd[1]["train_loss"]).all()  # two exchanges, two streams
    wrong = _torchrun(["run", str(cfg), "deep.workers=3", "--out", str(tmp_path / "wrong")])
    assert wrong.returncode != 0 and "deep.workers=3 but 2 processes run" in wrong.stderr


def test_hook_modes_are_checked():
    from lowbit import get_compressor
    from lowbit.compress import ErrorFeedback
    from lowbit.distributed.hooks import HookState

    with pytest.raises(ValueError, match="gather"):
        HookState(get_compressor("qsgd"), mode="reduce")
    with pytest.raises(ValueError, match="per parameter"):
        HookState(ErrorFeedback(get_compressor("intsgd", bits=8)), mode="scatter")
    assert HookState(get_compressor("qsgd"), mode="scatter").mode == "scatter"
