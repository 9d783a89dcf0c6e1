"""SimulatedCluster: n workers in one process, batched on one device.

Each worker's vector is a row of an (n, d) tensor.  :meth:`exchange` compresses every row with
the cluster's codec and returns what the receiver decodes, with the bits sent.  Two modes:

* batched (the default): one encode of the stacked rows when the codec is elementwise
  (identity, cast without scaling, intsgd, natural, and error feedback around them: a shared
  public scale and per-coordinate rounding make the stacked call identical to n separate ones in
  distribution), one multi-tensor call with a scale per row for the other codecs that have one
  (QSGD, TernGrad, signSGD: :meth:`MultiTensor.flat_roundtrip`), one call per worker otherwise;
  one generator for all workers.
* per worker (``seed=s``): worker i encodes its own row with its own generator
  :func:`worker_generator` (s, i), exactly as rank i of a real ``torch.distributed`` run with the
  same seed does (:class:`lowbit.distributed.DistributedCluster`, :mod:`lowbit.distributed.hooks`), so both
  give the same numbers.  Codecs with a multi-tensor path take the real run's bucket route (each
  row a bucket of one tensor, :class:`~lowbit.distributed.bucket.BucketCoder`: the mean is
  decoded in float32, the summable ones from the sum of the payloads); the others go as packets.

Agreements among workers (HintSGD's max‖g_i‖∞ before encoding, IntSGD's container type after it;
see :class:`lowbit.compress.Compressor`) are maxima over the rows, as a real run's all-reduce.
Codec state lives in the cluster: one stacked state (batched), or one per worker, or one shared
object for codecs whose state is public (IntSGD's α).

Integer codecs also report the IntSGD paper's count: each worker's message costs
d·(1 + ⌈log₂(max|Int| + 1)⌉) bits, and so does the summed message.
"""

from __future__ import annotations

import copy

import torch

from ..compress import Compressor, resolve_codec
from ..compress.intsgd import int_widths
from ..compress import many
from ..compress.base import Summable, WorkerAgreement
from ..compress.many import segments
from .bucket import BucketCoder, bucketable, carry_memory, observe_states, one_tensor_route, parameter_states
from .cluster import one_tensor_coder
from .seeding import bucket_seed, param_seed, worker_generator


CHUNK = 1 << 26  # values coded per call in batched mode (temporaries stay a few hundred MB)


class SimulatedCluster:
    def __init__(self, n: int, compressor, *, generator: torch.Generator | None = None, seed: int | None = None):
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if generator is not None and seed is not None:
            raise ValueError("give either one generator (batched mode) or a seed (per-worker generators)")
        self.n = n
        self.rows = slice(0, n)  # the workers whose rows this process holds: all of them
        self.codec: Compressor = resolve_codec(compressor)
        self.generator = generator
        self.seed = seed
        self.generators: list[torch.Generator] | None = None
        self.state = None
        self._states: list | None = None
        self.memory: list | None = None  # per-worker streams, bucket route: each worker's error-feedback memory
        self._coder: BucketCoder | None = None

    def _width_bits(self, ints: torch.Tensor, d: int) -> dict:
        rows = ints.reshape(self.n, -1)
        lo, hi = torch.aminmax(rows, dim=1)  # max |Int| of each worker without a copy of the rows
        m = torch.maximum(lo.double().abs(), hi.double())
        w = int_widths(m)
        ws = int_widths(rows.sum(0, dtype=torch.int64).abs().max())
        return {"width_bits": float((w * d).sum()), "sum_width_bits": float(ws * d)}

    def _worker_state(self, i: int, v: torch.Tensor):
        codec = self.codec
        if codec.traits.shared_state:
            if self.state is None:
                self.state = codec.init_state(v)
            return self.state
        if self._states is None:
            self._states = [None] * self.n
        if self._states[i] is None:
            self._states[i] = codec.init_state(v)
        return self._states[i]

    def exchange(self, vectors: torch.Tensor, *, inplace: bool = False) -> tuple[torch.Tensor, dict]:
        """Compress each worker's row of ``vectors`` (n × d); (decoded rows, {"bits": …}).
        ``inplace``: the decoded rows overwrite ``vectors`` (codecs of fixed size code them chunk by
        chunk, so the memory beyond the rows is one chunk's temporaries)."""
        out, info = self._exchange(vectors, inplace)
        if inplace and out is not vectors:
            vectors.copy_(out)
            out = vectors
        return out, info

    def _exchange(self, vectors: torch.Tensor, inplace: bool) -> tuple[torch.Tensor, dict]:
        if vectors.shape[0] != self.n:
            raise ValueError(f"expected {self.n} rows (one per worker), got {vectors.shape[0]}")
        codec, d = self.codec, vectors[0].numel()
        fixed = (self.seed is None and many.batchable(codec) and not codec.agreed_scales  # HintSGD: max over all rows
                 and vectors.dtype == torch.float32)
        if fixed and codec.traits.elementwise:  # sizes known, one scale for all: rows in chunks, no packing
            if self.state is None:
                self.state = codec.init_state(vectors[0])
            out = vectors if inplace else torch.empty_like(vectors)
            step = max(1, CHUNK // max(1, d))  # temporaries of one chunk only: memory ≈ 2 × the rows
            for i in range(0, self.n, step):
                out[i : i + step] = codec.roundtrip(vectors[i : i + step], state=self.state,
                                                    generator=self.generator)[0].reshape(out[i : i + step].shape)
            per = 8 * codec.wire_bytes(d)
            return out, {"bits": per * self.n, "bits_per_worker": [per] * self.n}
        if self.seed is None and codec.traits.elementwise:
            if self.state is None:
                self.state = codec.init_state(vectors[0])
            pk = codec.encode(vectors, state=self.state, generator=self.generator)
            info = {"bits": 8 * pk.nbytes}
            if "ints" in pk.payload:
                info.update(self._width_bits(pk.payload["ints"], d))
            return codec.decode(pk).to(vectors.dtype), info
        if fixed:
            # per-row scales (QSGD's norms, TernGrad's max, signSGD's mean |g|): the rows are the
            # tensors of a flat multi-tensor call, each still its own message; in chunks of rows
            out = vectors if inplace else torch.empty_like(vectors)
            step = max(1, CHUNK // max(1, d))
            for i in range(0, self.n, step):  # each chunk is encoded whole before its decode writes
                flat = vectors[i : i + step].contiguous().reshape(-1)
                k = flat.numel() // max(1, d)
                codec.flat_roundtrip(flat, list(flat.split(d)), segments([d] * k, flat.device), generator=self.generator,
                                     out=out[i : i + step].reshape(-1))
            per = 8 * codec.wire_bytes(d)
            return out, {"bits": per * self.n, "bits_per_worker": [per] * self.n}
        if self.seed is not None and one_tensor_route(codec):
            own, _, info = self._buckets(vectors)
            return own, info
        packets, info = self._per_worker(vectors)
        return torch.stack([codec.decode(p).to(vectors.dtype) for p in packets]), info

    def _buckets(self, rows: torch.Tensor):
        """Per-worker streams of a codec of fixed sizes: each row coded as a bucket of one tensor,
        as rank i of a real run codes it (:func:`lowbit.distributed.cluster.exchange_all`).
        Returns (decoded rows, mean, info) in the rows' dtype."""
        codec, n = self.codec, self.n
        if self.generators is None:
            self.generators = [worker_generator(self.seed, i, rows.device) for i in range(n)]
        if self.memory is None:
            self.memory = [None] * n
        like = rows[0]
        self._coder = one_tensor_coder(codec, like, self._coder)
        coder, t = self._coder, codec.traits
        flats = rows.detach().reshape(n, -1).to(torch.float32, copy=True)
        agreed = torch.stack([coder.agreement(f) for f in flats]).amax(0) if coder.agreed else None
        payloads, owns = [], []
        for i in range(n):
            flat = flats[i]
            states = agreed if agreed is not None else (
                [self._worker_state(i, like)] if t.shared_state or t.worker_state else None)
            p, self.memory[i], own = coder.encode_own(flat, generator=self.generators[i], memory=self.memory[i],
                                                      states=states)
            payloads.append(p)
            owns.append(own)
        if coder.container:  # the automatic width: the container of the largest max|Int| over the workers
            agreed = float(torch.stack([coder.peak(p) for p in payloads]).amax())
            payloads = [coder.conform(p, agreed) for p in payloads]
        bits = [8 * coder.nbytes(p) for p in payloads]
        mean = torch.empty_like(owns[0])
        info = {"bits": sum(bits), "bits_per_worker": bits}
        if coder.summable:
            total = coder.sum_payloads(payloads)
            coder.decode_sum(total, n, mean)
            if "ints" in total:
                d = like.numel()
                info.update(self._width_bits(torch.stack([p["ints"].reshape(-1) for p in payloads]), d))
        else:
            coder.mean_decoded(payloads, mean)
        own = torch.stack(owns).view(rows.shape).to(rows.dtype)
        return own, mean.view(like.shape).to(rows.dtype), info

    def _per_worker(self, vectors: torch.Tensor):
        codec, d = self.codec, vectors[0].numel()
        if self.seed is not None and self.generators is None:
            self.generators = [worker_generator(self.seed, i, vectors.device) for i in range(self.n)]
        agrees = isinstance(codec, WorkerAgreement)
        before = [codec.agree_before(v) for v in vectors] if agrees else [None]
        shared = torch.stack(before).amax() if before[0] is not None else None
        packets = []
        for i, v in enumerate(vectors):
            st = shared if shared is not None else self._worker_state(i, v)
            gen = self.generators[i] if self.generators is not None else self.generator
            packets.append(codec.encode(v, state=st, generator=gen))
        after = [codec.agree_after(p) for p in packets] if agrees else [None]
        if after[0] is not None:
            packets = [codec.conform(p, max(after)) for p in packets]
        per_worker = [8 * p.nbytes for p in packets]
        info = {"bits": sum(per_worker), "bits_per_worker": per_worker}
        if "ints" in packets[0].payload:
            info.update(self._width_bits(torch.stack([p.payload["ints"].reshape(-1) for p in packets]), d))
        return packets, info

    def mean(self, vectors: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """(1/n)·Σ_i decode(encode(v_i)): what an all-reduce/all-gather of the packets delivers."""
        _, mean, info = self.reduce(vectors)
        return mean, info

    def reduce(self, rows: torch.Tensor, *, exact: bool = False,
               inplace: bool = False) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """(decoded rows of this process's workers, mean over all workers, info): the interface
        the DIANA family uses, shared with :class:`lowbit.distributed.DistributedCluster`.  ``exact``
        sends float values uncompressed (32 bits per coordinate); ``inplace`` writes the decoded
        rows over ``rows`` (see :meth:`exchange`)."""
        if exact:
            return rows, rows.mean(0), {"bits": 32 * rows.numel()}
        if self.seed is not None and one_tensor_route(self.codec):  # the real run's bucket route
            own, mean, info = self._buckets(rows)
            return (rows.copy_(own) if inplace else own), mean, info
        if self.seed is not None and isinstance(self.codec, Summable):  # summed in flight, as an all-reduce does
            packets, info = self._per_worker(rows)
            total = packets[0]
            for p in packets[1:]:
                total = self.codec.add(total, p)
            out = torch.stack([self.codec.decode(p).to(rows.dtype) for p in packets])
            if inplace:
                out = rows.copy_(out)
            return out, self.codec.decode(total).to(rows.dtype) / self.n, info
        out, info = self.exchange(rows, inplace=inplace)
        return out, out.mean(0), info

    def reduce_runs(self, rows: torch.Tensor, *, exact: bool = False):
        """:meth:`reduce` for R independent runs of this cluster stacked as rows (R × n × d, e.g.
        seeds; see :class:`lowbit.optim.DIANA`): each run's workers share
        that run's scale s_r (:meth:`MultiTensor.run_scales`; IntSGD's α_r from a state holding R
        values), the unit coder runs once over all R·n·d values, and ``info`` holds R values each."""
        R, n, d = rows.shape
        if n != self.n:
            raise ValueError(f"expected {self.n} rows per run (one per worker), got {n}")
        if exact:
            return rows, rows.mean(1), {"bits": torch.full((R,), 32.0 * n * d, dtype=torch.float64)}
        if self.seed is not None:
            raise ValueError("batched runs draw from one generator: per-worker streams (seed=…) take one run")
        codec = self.codec
        if not isinstance(codec, many.MultiTensor):
            raise NotImplementedError(f"{codec.name} cannot code batched runs (it has no multi-tensor path)")
        if codec.traits.shared_state and self.state is None:
            self.state = codec.init_state(rows[0, 0])
        s = codec.run_scales(rows, self.state)
        # float32 values and a float32 inverse scale (IntSGD's α), as every codec's encode and decode use
        if s is None:
            units = codec.unit_roundtrip(rows.float(), self.generator)
            out = units.to(rows.dtype)
        else:
            inv = torch.where(s == 0, torch.ones_like(s), 1.0 / s).float()
            units = codec.unit_roundtrip(rows.float() * inv, self.generator)
            out = (units / inv).to(rows.dtype)
        return out, out.mean(1), codec.run_bits(units.to(rows.dtype))

    def state_dict(self) -> dict:
        return {"state": self.state, "states": self._states,
                "memory": [m.clone() if m is not None else None for m in self.memory] if self.memory else None,
                "generators": [(str(g.device), g.get_state()) for g in self.generators]
                if self.generators is not None else None}

    def load_state_dict(self, sd: dict) -> None:
        self.state, self._states = sd["state"], sd["states"]
        mem = sd.get("memory")
        self.memory = [m.clone() if m is not None else None for m in mem] if mem is not None else None
        if sd.get("generators") is not None:
            self.generators = []
            for dev, st in sd["generators"]:
                g = torch.Generator(device=dev)
                g.set_state(st)
                self.generators.append(g)


class SimulatedDataParallel:
    """Data-parallel training over n simulated workers: each worker's gradients are compressed
    by its own worker, and each parameter's gradient becomes the mean of the decoded ones — what
    :func:`lowbit.distributed.hooks.hook_for` does in a DDP run.

    * ``buckets`` (the layouts ``HookState.buckets()`` reports, [(first step, [[positions], …]),
      …], or one fixed list of buckets): each bucket is one message per worker, coded as the DDP
      hook codes it (:class:`lowbit.distributed.bucket.BucketCoder`, worker i drawing from
      worker_generator(bucket_seed(seed, J), i)); codecs without a multi-tensor path, and
      ``buckets=None``, go parameter by parameter:
    * parameter j has its own ``SimulatedCluster(n, codec, seed=param_seed(seed, j))`` (``seed``
      given: the numbers of DDP with the same seed) or a batched one (``seed=None``)."""

    def __init__(self, params, n: int, compressor, *, seed: int | None = 0, generator=None, buckets=None,
                 exact_below: int = 0):

        self.params = list(params)
        self.n = n
        self.clusters = [SimulatedCluster(n, compressor, seed=param_seed(seed, j) if seed is not None else None,
                                          generator=generator) for j in range(len(self.params))]
        self.codec = self.clusters[0].codec if self.clusters else None
        self.bits_per_worker = [0] * n
        self.layouts = None
        self.seed, self.exact_below, self.steps = seed, exact_below, 0
        self.sim_buckets: dict = {}
        if buckets is not None:
            self.set_buckets(buckets)
        self.param_states: dict = {}  # public per-parameter codec states (IntSGD's α)
        self.worker_states: dict = {}  # worker → parameter → its own codec state (PowerSGD's), bucket path

    def set_buckets(self, buckets) -> None:
        """Code the workers' gradients in ``buckets`` from now on (the forms of ``buckets=``; a
        codec without a multi-tensor path stays per parameter)."""
        if self.codec is None or not bucketable(self.codec):
            return
        if self.seed is None:
            raise ValueError("buckets reproduce a DDP run: give its seed")
        fixed = all(isinstance(j, int) for j in buckets[0])  # one list of buckets, not (step, layout) pairs
        layouts = [(0, buckets)] if fixed else [(int(s), [list(b) for b in lay]) for s, lay in buckets]
        for _, lay in layouts:
            if sorted(int(j) for b in lay for j in b) != list(range(len(self.params))):
                raise ValueError(f"buckets must hold every parameter once, got {lay}")
        self.layouts = layouts

    def set_grads(self, worker_grads) -> dict:
        """``worker_grads[j]``: the (n, *p_j.shape) stack of the workers' gradients of parameter j.
        Sets every ``p.grad`` to the mean of the decoded gradients; returns the bits sent."""
        if self.layouts is not None:
            layout = [lay for s, lay in self.layouts if s <= self.steps][-1]
            self.steps += 1
            return {"bits": sum(self._bucket(b).set_grads(worker_grads) for b in layout)}
        bits = 0
        for p, cl, g in zip(self.params, self.clusters, worker_grads):
            _, mean, info = cl.reduce(g.reshape(self.n, *p.shape))
            p.grad = mean.reshape(p.shape).to(p.dtype)
            bits += info["bits"]
            for i, b in enumerate(info.get("bits_per_worker", ())):
                self.bits_per_worker[i] += b
        return {"bits": bits}

    def _bucket(self, order) -> "_SimBucket":

        key = tuple(int(j) for j in order)
        if key not in self.sim_buckets:
            b = _SimBucket(self, list(key), bucket_seed(self.seed, key), self.exact_below)
            for i in range(self.n):  # DDP's new layout after the first step keeps the memory
                b.memory[i] = carry_memory({k: (o.memory[i], o.coder.sizes) for k, o in self.sim_buckets.items()},
                                           key, b.coder.sizes)
            self.sim_buckets[key] = b
        return self.sim_buckets[key]

    def observe(self, lr: float, step_sq_norm) -> None:
        """Adaptive IntSGD: update α of every parameter (as ``HookState.observe``: one value, or
        each parameter's own)."""
        observe_states(self.codec, [*self.param_states.items(), *((j, c.state) for j, c in enumerate(self.clusters))],
                       lr, step_sq_norm)

    def state_dict(self) -> dict:
        return {"clusters": [c.state_dict() for c in self.clusters], "bits_per_worker": list(self.bits_per_worker),
                "param_states": dict(self.param_states), "steps": self.steps, "layouts": self.layouts,
                "worker_states": copy.deepcopy(self.worker_states),  # PowerSGD's error changes in place later
                "buckets": {k: b.state_dict() for k, b in self.sim_buckets.items()}}

    def load_state_dict(self, sd: dict) -> None:
        for c, s in zip(self.clusters, sd["clusters"]):
            c.load_state_dict(s)
        self.bits_per_worker = list(sd["bits_per_worker"])
        self.param_states = dict(sd.get("param_states", {}))
        self.steps = sd.get("steps", 0)
        if sd.get("layouts") is not None:
            self.layouts = sd["layouts"]
        self.worker_states = copy.deepcopy(sd.get("worker_states", {}))
        for k, s in (sd.get("buckets") or {}).items():
            self._bucket(k).load_state_dict(s)


class _SimBucket:
    """One DDP bucket of the simulation: n workers' messages coded as the hook codes them."""

    def __init__(self, owner: SimulatedDataParallel, index: list[int], seed: int, exact_below: int):

        self.owner, self.index, self.seed = owner, index, seed
        ps = [owner.params[j] for j in index]
        self.coder = BucketCoder(owner.codec, [p.numel() for p in ps], ps[0].device, exact_below=exact_below,
                                 shapes=[tuple(p.shape) for p in ps])
        self.generators = [worker_generator(seed, i, ps[0].device) for i in range(owner.n)]
        self.memory = [None] * owner.n

    def set_grads(self, worker_grads) -> float:
        o, coder = self.owner, self.coder
        ps = [o.params[j] for j in self.index]
        states = parameter_states(o.param_states, self.index, ps, o.codec) if o.codec.traits.shared_state else None
        own = o.codec.traits.worker_state  # each worker's own per-parameter states (PowerSGD)
        flats = torch.cat([worker_grads[j].reshape(o.n, -1).float() for j in self.index], 1)
        if coder.agreed:  # HintSGD: the maximum over the workers, as the hook's all-reduce
            states = torch.stack([coder.agreement(flats[i]) for i in range(o.n)]).amax(0)
        payloads, exacts, bits = [], [], 0.0
        for i in range(o.n):
            exacts.append(coder.exact_part(flats[i]))
            if own:
                states = parameter_states(o.worker_states.setdefault(i, {}), self.index, ps, o.codec)
            p, self.memory[i] = coder.encode(flats[i].clone(), generator=self.generators[i], memory=self.memory[i],
                                             states=states)
            payloads.append(p)
            b = 8 * coder.nbytes(p)
            o.bits_per_worker[i] += b
            bits += b
        out = torch.empty_like(flats[0])
        if coder.summable:
            coder.decode_sum(coder.sum_payloads(payloads), o.n, out)
        else:
            coder.mean_decoded(payloads, out)
        coder.join(out, coder.mean_exact(exacts))
        for p, v in zip(ps, torch.split(out, [p.numel() for p in ps])):
            p.grad = v.reshape(p.shape).to(p.dtype)
        return bits

    def state_dict(self) -> dict:
        return {"memory": [m.clone() if m is not None else None for m in self.memory],  # updated in place later
                "generators": [g.get_state() for g in self.generators]}

    def load_state_dict(self, sd: dict) -> None:
        self.memory = [m.clone() if m is not None else None for m in sd["memory"]]
        for g, st in zip(self.generators, sd["generators"]):
            g.set_state(st)
