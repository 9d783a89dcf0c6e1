"""The deep lab's training loop: kind ``deep`` of the runner.

The whole dataset lives on the device as one tensor; each epoch draws a permutation, and random
crop (padding 4) and horizontal flip are done on the device for the whole batch at once (no
per-sample Python, no DataLoader workers), in the airbench style.  Gradients go through the
run's codec:

* one worker: :class:`lowbit.optim.QuantizedGradients` around SGD (records q and bits, optional
  stepsize compensation) — the slowdown paper's setting;
* ``deep.workers = n``: each worker computes the gradient of its share of the batch, every
  parameter's gradients are compressed per worker and averaged by
  :class:`lowbit.distributed.SimulatedDataParallel` (per-worker generators: the numbers of a DDP run
  with the same seed) — the IntSGD paper's 8 simulated workers.  Under torchrun with n
  processes, each process is one worker: ``DistributedDataParallel`` with lowbit's communication
  hook (:func:`lowbit.distributed.hooks.hook_for`) and the same seed, so a real run and its simulation
  give the same numbers.  ``deep.exchange``: one message per parameter (default), or per DDP
  bucket of ``deep.bucket_mb`` MiB — the real run's fast path, which the simulation follows by
  laying the buckets out as DDP does (:func:`lowbit.distributed.bucket.ddp_layouts`, from the order the
  gradients became ready in the first backward).  The numbers agree for models that draw no
  random numbers in their forward pass (dropout, a VAE's sampling draw them per process) and, for
  test metrics, without BatchNorm (DDP keeps rank 0's running statistics, the simulation updates
  them with every worker's share in turn);
* a factored codec (ISGQ): :class:`lowbit.distributed.FactoredDataParallel` sends each worker's
  quantized layer inputs and output errors instead of weight gradients (ISGQ's experiments);
* ``optim.name`` svrg or halp (one worker): :class:`lowbit.optim.SVRG` / :class:`lowbit.optim.HALP`
  pick their own mini-batches and take the full gradient every ``optim.T_epochs`` passes (the
  HALP notebook's ResNet-18 experiments; ``optim.bits`` and ``optim.halp_mu`` set HALP's b and μ).  IntSGD's adaptive α is
  layer-wise: after each step it observes each parameter's own ‖x_{k+1} − x_k‖².

Metrics per epoch: train loss (mean over the epoch), test accuracy (or test loss for VAEs), mean
q (one worker), bits sent, wall time.  A checkpoint after every epoch holds everything needed to
continue identically (model, optimizer, codec state, generators).
"""

from __future__ import annotations

import math
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from ..compress import get_compressor, resolve_codec
from ..data.augment import augment, centre  # noqa: F401  (re-exported)
from ..data.images import load_images
from ..distributed import FactoredDataParallel, SimulatedDataParallel, process_group
from ..distributed.bucket import bucketable, ddp_layouts
from ..distributed.hooks import hook_for
from ..models import count_parameters, get_model, vae_loss
from ..nn import lower, quantizers
from ..optim import HALP, SVRG, LowPrecision, QuantizedGradients
from .config import ConfigError, RunConfig
from .results import RunFolder
from .loop import Stop, checkpointed  # noqa: F401  (Stop: re-exported)
from .kind import Kind, register, run_name, table


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def run_deep(cfg: RunConfig, folder: RunFolder, *, resume: bool = True, stop_after: int | None = None,
             progress=None) -> dict:
    dc, q = cfg.deep, cfg.quant
    dev = _device(dc.device)
    torch.manual_seed(cfg.seed)
    data = load_images(dc.dataset).subset(dc.train_size, dc.test_size).to(dev)
    is_vae = dc.model in ("vae", "btcvae")
    opts = dict(dc.model_options)
    if not is_vae and dc.model not in ("fc",):
        opts.setdefault("in_channels", data.shape[0])
    if dc.model in ("lenet", "cifarnet"):
        opts.setdefault("image_size", dc.crop or data.shape[-1])
    if dc.model == "fc" or is_vae:
        opts.setdefault("in_features", math.prod(data.shape))
    model = get_model(dc.model, **opts).to(dev)
    if dc.channels_last:
        model = model.to(memory_format=torch.channels_last)
    pc = cfg.precision
    if pc.in_model:  # rounded layer outputs forward and errors backward, each place recording its q
        lower(model, tuple(getattr(torch.nn, name) for name in pc.layers), forward=pc.activations,
              backward=pc.errors, rounding=pc.rounding, backward_rounding=pc.error_rounding, record=True,
              generator=torch.Generator(device=dev).manual_seed(cfg.seed + 2))
    params = [p for p in model.parameters()]
    # fused on CUDA: one kernel per step, and a step skipped on the device for a non-finite
    # gradient (QuantizedGradients' check then reads nothing on the host until the epoch's end)
    base = torch.optim.SGD(params, lr=dc.lr, momentum=dc.momentum, weight_decay=dc.weight_decay,
                           fused=dev.type == "cuda")
    codec = None
    if q.codec not in ("fp32", "float32", "none"):
        codec = get_compressor(q.codec, **q.options) if q.options else resolve_codec(q.codec, q.rounding)
    n = dc.workers
    sdp = opt = ddp = hook_state = None
    factored = codec is not None and codec.traits.factored
    N = data.train_x.shape[0]
    vr = cfg.optim.name in ("svrg", "halp")
    world, rank = process_group.world_size(), process_group.rank()
    if world > 1:  # one worker per process (torchrun): DDP with lowbit's hook
        if n != world:
            raise ConfigError(f"deep.workers={n} but {world} processes run: set deep.workers={world} or start "
                              f"{n} processes")
        if vr or factored:
            raise ConfigError("svrg/halp and factored codecs (ISGQ) run in one process (simulated workers), "
                              "not under torchrun")
    if vr:  # the HALP notebook's SVRG and HALP: one worker, exact gradients, offsets in b bits
        if n > 1 or codec is not None or dc.augment or dc.momentum:
            raise ConfigError("svrg/halp in the deep lab take one worker, no codec, no augmentation (the "
                              "snapshot and the step must see the same mini-batch) and no momentum")
        kw = dict(lr=dc.lr, n=N, T_epochs=cfg.optim.T_epochs, weight_decay=dc.weight_decay,
                  batch_size=dc.batch_size, seed=cfg.seed)
        opt = (SVRG(params, **kw) if cfg.optim.name == "svrg"
               else HALP(params, bits=cfg.optim.bits, mu=cfg.optim.halp_mu or 1.0, **kw))
    elif cfg.optim.name != "sgd":
        raise ConfigError(f"the deep lab trains with optim.name sgd, svrg or halp, not {cfg.optim.name!r}")
    elif factored:  # ISGQ: layer inputs and errors travel, for any number of workers
        sdp = FactoredDataParallel(model, n, codec, seed=cfg.seed)
        opt = base
    elif world > 1:
        # on CUDA each bucket's exchange is replayed from a CUDA graph where the codec allows (same numbers)
        hook_state, hook = hook_for(codec or get_compressor("identity"), model=model, seed=cfg.seed,
                                    per_parameter=dc.exchange == "parameter",
                                    cuda_graph=next(model.parameters()).is_cuda)
        ddp = DistributedDataParallel(model, bucket_cap_mb=dc.bucket_mb)
        ddp.register_comm_hook(hook_state, hook)
        opt = base
    elif n > 1:
        sdp = SimulatedDataParallel(params, n, codec or get_compressor("identity"), seed=cfg.seed)
        opt = base
    elif codec is not None:
        comp = None if q.compensate == "none" else q.compensate
        # on CUDA the codec's and the statistics' kernels replay from one CUDA graph per step
        opt = QuantizedGradients(base, codec, compensate=comp, q_min=q.q_min, rounding=q.rounding,
                                 generator=torch.Generator(device=dev).manual_seed(cfg.seed + 1),
                                 cuda_graph=dev.type == "cuda")
    else:
        opt = base
    if pc.low_precision_optimizer:
        if vr:
            raise ConfigError("precision.weights/state keep an SGD optimizer in low precision; HALP has its own offsets")
        opt = LowPrecision(opt, weight=pc.weights, state=pc.state, rounding=pc.weight_rounding,
                           generator=torch.Generator(device=dev).manual_seed(cfg.seed + 3))
    gen = torch.Generator(device=dev).manual_seed(cfg.seed)
    steps_per_epoch = max(1, N // dc.batch_size)
    epochs = max(1, int(math.ceil(cfg.epochs)))

    rows, start, wall0, bits = [], 0, 0.0, 0.0
    ck = folder.load_checkpoint() if resume else None
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        if sdp is not None:
            sdp.load_state_dict(ck["sdp"])
        if hook_state is not None:
            hook_state.load_state_dict(ck["hook"])
        gen.set_state(ck["gen"])
        torch.set_rng_state(ck["torch_rng"])
        rows, start, wall0, bits = ck["rows"], ck["epoch"], ck["wall"], ck["bits"]
    t0 = time.perf_counter() - wall0
    # the simulation in DDP's buckets: the second layout follows the order in which the first
    # backward makes the gradients ready
    ready = None
    if (isinstance(sdp, SimulatedDataParallel) and dc.exchange == "bucket" and sdp.layouts is None
            and bucketable(sdp.codec)):
        ready = []
        hooks = [p.register_post_accumulate_grad_hook(lambda _, j=j: ready.append(j)) for j, p in enumerate(params)]
    exchange_codec = hook_state.codec if hook_state is not None else getattr(sdp, "codec", None)
    adaptive = getattr(exchange_codec, "adaptive", False)

    def step_observed(lr: float) -> None:
        """opt.step(); with IntSGD's adaptive α, each parameter's α then follows its own step
        ‖x_{k+1} − x_k‖² (one read of all the norms)."""
        before = [p.detach().clone() for p in params] if adaptive else None
        opt.step()
        if before is not None:
            sq = torch.stack([((p.detach() - b) ** 2).sum() for p, b in zip(params, before)]).tolist()
            (hook_state if hook_state is not None else sdp).observe(lr, sq)

    def loss_of(x, y, net=None):
        if is_vae:
            return vae_loss(model, x, N, forward=net)
        return F.cross_entropy((net or model)(x), y)

    def closure(idx):  # SVRG/HALP: mean loss of the images idx (None: all, in chunks), backward done
        if idx is not None:
            idx = idx.to(dev)
            loss = loss_of(data.train_x[idx], data.train_y[idx])
            loss.backward()
            return loss
        total = torch.zeros((), device=dev)
        for i in range(0, N, 1000):
            part = loss_of(data.train_x[i : i + 1000], data.train_y[i : i + 1000]) * (min(N, i + 1000) - i) / N
            part.backward()
            total += part.detach()
        return total

    @torch.no_grad()
    def evaluate() -> float:
        model.eval()
        total, right = 0.0, 0
        for i in range(0, data.test_x.shape[0], 1000):
            x, y = centre(data.test_x[i : i + 1000], dc.crop), data.test_y[i : i + 1000]
            if is_vae:
                total += float(vae_loss(model, x, N)) * x.shape[0]
            else:
                right += int((model(x).argmax(1) == y).sum())
        model.train()
        m = data.test_x.shape[0]
        return total / m if is_vae else right / m

    layer_names = [name for name, p in model.named_parameters() if p.requires_grad]
    def train_epoch(epoch: int) -> None:  # one epoch, and its metrics row
        nonlocal bits, ready
        lr = dc.lr * dc.lr_decay ** sum(epoch >= m for m in dc.milestones) * dc.epoch_decay ** epoch
        for g in opt.param_groups:
            g["lr"] = lr
        perm = torch.randperm(N, device=dev, generator=gen)
        # with several workers each keeps its own sum (as each process of a real run does), added at the end
        loss_sum = torch.zeros(n if sdp is not None and not factored else (), device=dev)
        grads_opt = opt.optimizer if isinstance(opt, LowPrecision) else opt  # where gradient statistics live
        logged = len(grads_opt.log) if isinstance(grads_opt, QuantizedGradients) else 0
        updates_logged = len(opt.log) if isinstance(opt, LowPrecision) else 0
        for s in range(steps_per_epoch):
            if vr:  # the optimizer draws its mini-batches and calls the closure
                loss_sum += opt.step(closure).detach()
                continue
            idx = perm[s * dc.batch_size : (s + 1) * dc.batch_size]
            x, y = data.train_x[idx], data.train_y[idx]
            if dc.augment and not is_vae:
                x = augment(x, gen, crop=dc.crop)
            if dc.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if ddp is not None:  # this process's share of the batch
                opt.zero_grad()
                loss = loss_of(x.chunk(n)[rank], y.chunk(n)[rank], ddp)
                loss.backward()
                step_observed(lr)
                loss_sum += loss.detach() / n
            elif sdp is None:
                opt.zero_grad()
                loss = loss_of(x, y)
                loss.backward()
                opt.step()
                loss_sum += loss.detach()
            elif factored:
                for xw, yw in zip(x.chunk(n), y.chunk(n)):
                    model.zero_grad()
                    with sdp.capture():
                        loss = loss_of(xw, yw)
                    loss.backward()
                    sdp.collect()
                    loss_sum += loss.detach() / n
                bits += sdp.set_grads()["bits"]
                opt.step()
            else:
                per_worker = []
                for w, (xw, yw) in enumerate(zip(x.chunk(n), y.chunk(n))):
                    model.zero_grad()
                    loss = loss_of(xw, yw)
                    loss.backward()
                    per_worker.append([p.grad.detach().clone() for p in params])
                    loss_sum[w] += loss.detach() / n
                    if ready is not None:  # the first backward: DDP's layouts from now on
                        for h in hooks:
                            h.remove()
                        sdp.set_buckets(ddp_layouts([p.numel() for p in params], ready, dc.bucket_mb))
                        ready = None
                bits += sdp.set_grads([torch.stack([w[j] for w in per_worker]) for j in range(len(params))])["bits"]
                step_observed(lr)
        qs, epoch_bits, places = [], 0.0, {}
        if isinstance(grads_opt, QuantizedGradients):
            grads_opt.raise_if_nonfinite()
            new = grads_opt.log.rows()[logged:]
            qs = [r["q"] for r in new]
            layered = [r["q_layers"] for r in new if r.get("group") == 0 and "q_layers" in r]
            if layered and len(layered[0]) == len(layer_names):  # q of each parameter, mean over the epoch
                for name, col in zip(layer_names, zip(*layered)):
                    places[f"q[{name}]"] = sum(col) / len(col)
            epoch_bits = sum(r["bits"] for r in new)
            bits += epoch_bits
        if isinstance(opt, LowPrecision):  # the share of each weight update that the weights' format keeps
            upd = [r["q"] for r in opt.log.rows()[updates_logged:]]
            places["q_update"] = sum(upd) / len(upd) if upd else float("nan")
        for name, qz in quantizers(model).items():  # one column per place of rounding and direction
            for key, v in qz.means().items():
                places[f"{key}[{name.removesuffix('.output_quantizer')}]"] = v
        if ddp is not None:  # every worker's losses and bytes
            totals = torch.stack([loss_sum.double(), torch.tensor(8.0 * hook_state.bytes_sent, dtype=torch.float64,
                                                                  device=loss_sum.device)])
            dist.all_reduce(totals)
            loss_sum, bits = totals[0], float(totals[1])
        train_loss = float(loss_sum.double().sum()) / steps_per_epoch
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"training diverged at epoch {epoch + 1}: train loss {train_loss}")
        metric = evaluate()
        rows.append({"epoch": epoch + 1, "step": (epoch + 1) * steps_per_epoch, "lr": lr,
                     "wall": time.perf_counter() - t0, "train_loss": train_loss,
                     ("test_loss" if is_vae else "test_accuracy"): metric,
                     "q": sum(qs) / len(qs) if qs else float("nan"), "bits": bits, **places})

    def state(done: int) -> dict:
        return {"model": model.state_dict(), "optimizer": opt.state_dict(),
                "sdp": sdp.state_dict() if sdp is not None else None,
                "hook": hook_state.state_dict() if hook_state is not None else None,
                "gen": gen.get_state(), "torch_rng": torch.get_rng_state(), "rows": rows,
                "epoch": done, "step": done, "wall": time.perf_counter() - t0, "bits": bits}

    checkpointed(folder, start, epochs, train_epoch, log_every=1, checkpoint_every=1, state=state,
                 stop_after=stop_after, progress=progress)
    folder.write_metrics(rows)
    return {"epochs": epochs, "final": rows[-1], "parameters": count_parameters(model), "device": str(dev),
            "steps_per_epoch": steps_per_epoch, "wall": rows[-1]["wall"], "train_images": N,
            "bits_per_step": bits / (epochs * steps_per_epoch),
            "bits_per_worker_step": bits / (epochs * steps_per_epoch * max(1, n))}


def report(runs: list) -> list[str]:
    metric = "test_accuracy" if "test_accuracy" in runs[0]["final"] else "test_loss"
    return table(runs, [("run", 36, run_name), ("train loss", 10, lambda r: f"{r['final']['train_loss']:.4f}"),
                        (metric.replace("_", " "), 13, lambda r: f"{r['final'][metric]:.4f}"),
                        ("mean q", 7, lambda r: f"{r['final']['q']:.3f}"),
                        ("MB sent", 9, lambda r: f"{r['final']['bits'] / 8e6:.2f}"),
                        ("wall s", 7, lambda r: f"{r['wall']:.1f}")])


KIND = register(Kind("deep", run_deep, report, figure="deep"))
