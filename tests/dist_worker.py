"""A worker process of the distributed tests, started like torchrun starts one (RANK,
WORLD_SIZE, MASTER_ADDR, MASTER_PORT in the environment).

    python dist_worker.py equiv OUT   # every codec through DDP hooks; the DIANA family; OUT.<rank>.pt
    python dist_worker.py kill        # all-reduces until a peer is killed
"""

import os
import sys
import time

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(__file__))
import dist_common as C  # noqa: E402

import lowbit.distributed as ld  # noqa: E402
from lowbit.distributed.hooks import hook_for  # noqa: E402


def equiv(out):
    rank, world = dist.get_rank(), dist.get_world_size()
    dev = C.device(rank)
    res = {}
    for label, make in C.CODECS.items():
        # messages of more than 512 bytes travel as several all-gathers (the CPU's chunked path)
        model, state = _train(make(world), rank, dev, exact_below=C.EXACT.get(label, 0), gather_chunk=512)
        res[label] = {"params": [p.detach().cpu() for p in model.parameters()], "bytes": state.bytes_sent,
                      "buckets": state.buckets()}
    for label, make in C.RESUMED.items():  # a restart from state_dict after step 0, against none
        for restart in (None, 1):
            res[f"resumed {label} {restart}"] = _train_resumed(make(world), rank, dev, restart)
    for label, make in C.SCATTER.items():  # compressed reduce-scatter + all-gather
        model, state = _train(make(world), rank, dev, mode="scatter")
        res["scatter " + label] = {"params": [p.detach().cpu() for p in model.parameters()], "bytes": state.bytes_sent}
    for label in C.PER_PARAMETER:  # one message per parameter: the bucket route of DistributedCluster
        model, state = _train(C.CODECS[label](world), rank, dev, per_parameter=True)
        res["per-parameter " + label] = {"params": [p.detach().cpu() for p in model.parameters()],
                                         "bytes": state.bytes_sent}
    for label in C.AHEAD:  # the next step's words drawn on a background thread
        model, _ = _train(C.CODECS[label](world), rank, dev, exact_below=C.EXACT.get(label, 0), gather_chunk=512,
                          draw_ahead=True)
        res["ahead " + label] = [p.detach().cpu() for p in model.parameters()]
    split = C.diana_problem(world)
    split = type(split)(split.A.to(dev), split.y.to(dev), split.lam)
    mine = split.workers(slice(rank, rank + 1))
    P = split.problem()
    for label, (make, steps) in C.DIANA_CODECS.items():
        x = torch.zeros(split.A.shape[2], dtype=torch.float64, device=dev)
        cluster = ld.DistributedCluster(make(world), seed=C.SEED)
        assert isinstance(cluster, ld.Cluster)  # the protocol the DIANA family takes
        opt = C.diana_optimizer(split, x, cluster)
        subopt = []
        for _ in range(steps):
            opt.step(mine.grads)
            subopt.append(P.suboptimality(x))
        res[label] = {"x": x.cpu(), "subopt": subopt, "bytes": cluster.bytes_sent}
    torch.save(res, f"{out}.{rank}.pt")


def _train(codec, rank, dev, **hook_options):
    """C.STEPS steps of DDP with the codec's hook: (model, hook state)."""
    model = C.make_model().to(dev)
    ddp = torch.nn.parallel.DistributedDataParallel(model, bucket_cap_mb=C.BUCKET_MB)
    state, hook = hook_for(codec, model=model, seed=C.SEED, **hook_options)
    ddp.register_comm_hook(state, hook)
    opt = torch.optim.SGD(model.parameters(), lr=C.LR)
    for k in range(C.STEPS):
        x, y = (t.to(dev) for t in C.worker_batch(rank, k))
        opt.zero_grad()
        C.loss_fn(ddp(x), y).backward()
        opt.step()
    return model, state


def _train_resumed(codec, rank, dev, restart):
    """C.STEPS steps with IntSGD's α observed after each; at step ``restart`` everything is rebuilt
    from state dicts, as a new process would."""
    model = C.make_model().to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=C.LR)
    ddp = torch.nn.parallel.DistributedDataParallel(model, bucket_cap_mb=C.BUCKET_MB)
    state, hook = hook_for(codec, model=model, seed=C.SEED)
    ddp.register_comm_hook(state, hook)
    for k in range(C.STEPS):
        if k == restart:
            sd_model, sd_opt, sd_hook = model.state_dict(), opt.state_dict(), state.state_dict()
            model = C.make_model().to(dev)
            model.load_state_dict(sd_model)
            opt = torch.optim.SGD(model.parameters(), lr=C.LR)
            opt.load_state_dict(sd_opt)
            ddp = torch.nn.parallel.DistributedDataParallel(model, bucket_cap_mb=C.BUCKET_MB)
            state, hook = hook_for(codec, model=model, seed=C.SEED)
            state.load_state_dict(sd_hook)
            ddp.register_comm_hook(state, hook)
        before = [p.detach().clone() for p in model.parameters()]
        x, y = (t.to(dev) for t in C.worker_batch(rank, k))
        opt.zero_grad()
        C.loss_fn(ddp(x), y).backward()
        opt.step()
        state.observe(C.LR, [float(((p.detach() - b) ** 2).sum()) for p, b in zip(model.parameters(), before)])
    return [p.detach().cpu() for p in model.parameters()]


def kill():
    t = torch.ones(4)
    step = 0
    while True:
        with ld.process_group.guard(f"all-reduce {step}"):
            dist.all_reduce(t)
        t /= dist.get_world_size()
        print(f"step {step}", flush=True)
        step += 1
        time.sleep(0.05)


if __name__ == "__main__":
    torch.set_num_threads(1)
    ld.init(C.BACKEND, timeout=float(os.environ.get("LOWBIT_DIST_TIMEOUT", "60")))
    try:
        if sys.argv[1] == "equiv":
            equiv(sys.argv[2])
        else:
            kill()
    finally:
        ld.shutdown()
