"""DDP communication hooks for every lowbit compressor.

    state, hook = hook_for("intsgd", model=model, seed=0, bits=8, n_workers=world)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    ddp.register_comm_hook(state, hook)

Codecs with a multi-tensor path (identity, casts without scaling, IntSGD and HintSGD with a
fixed width, natural compression, QSGD with fixed-width codes, TernGrad, signSGD, 1-bit SGD, and error
feedback around any of them but HintSGD), and PowerSGD (its factors of every tensor as one message), code
DDP's whole bucket in one call (:mod:`lowbit.distributed.bucket`): each parameter
keeps its own scale (QSGD's norm, TernGrad's max, IntSGD's α are per layer, as in the papers),
no value is read on the host, and the hook returns the collective's future chained with the
decode, as torch's ``powerSGD_hook`` does, so communication overlaps the rest of backward.
Summable codecs are summed in flight in their integer or float type by one all-reduce (HintSGD's
scales first agreed by a small all-reduce of every tensor's ‖g‖∞, which the hook waits for); the
others are all-gathered as bytes (on gloo in chunks of ``gather_chunk`` bytes, all in flight) and
every rank decodes and averages the n messages.  With ``draw_ahead``, on the CPU a stochastic
codec's next random words are drawn on a background thread while the bucket is on the wire
(:func:`lowbit.quantize.draw_ahead`: the same words).

Randomness and state are per bucket: the bucket laying out parameters J (positions in
``model.parameters()``, in DDP's order) draws on rank r from
:func:`~lowbit.distributed.simulated.worker_generator` (bucket_seed(seed, J), r), and keeps its
error-feedback memory, which follows each parameter when DDP lays its buckets out anew (it does
after the first step); IntSGD's α is per parameter.  ``state.buckets()`` lists the layouts seen,
and ``SimulatedDataParallel(…, buckets=state.buckets())`` with the same seed gives the numbers of
the DDP run.  A run restarted from ``state.state_dict()`` resumes exactly for deterministic codecs;
stochastic ones draw the same numbers only where the new DDP lays its buckets out as before.  The other codecs (top-k, rand-k, Elias
codes, block-scaled casts, HintSGD and IntSGD with the automatic width) are exchanged parameter by
parameter through :class:`~lowbit.distributed.DistributedCluster` (parameter j seeded with
param_seed(seed, j); ``SimulatedDataParallel`` without buckets), synchronously.

With ``cuda_graph=True`` (CUDA), a bucket's whole exchange — encode, the NCCL collective, decode —
is captured in a CUDA graph the second time DDP shows the bucket, and replayed from then on
(:func:`_replayed`): the same numbers, a fraction of the host's work, for the codecs that declare
``graph_safe`` (the others run eagerly).

``state.bytes_sent`` counts the payload bytes this rank sent, ``state.wire_bytes`` everything on
the wire.  Error-feedback memory, IntSGD's α, PowerSGD's warm start and DIANA shifts live in the
state and are saved with ``state.state_dict()``.  IntSGD's adaptive α follows the iterates: call
``state.observe(lr, step_sq_norm)`` after each optimizer step.
"""

import copy

import torch
import torch.distributed as dist

from ..compress import get_compressor
from ..compress import many
from ..compress.base import BucketCodec
from ..quantize import draw_ahead
from .bucket import BucketCoder, bucketable, carry_memory, observe_states, parameter_states
from .cluster import DistributedCluster, exchange_all
from .wire import all_gather_into as _all_gather_into
from .seeding import bucket_seed, param_seed, worker_generator


class _Bucket:
    """One bucket's coding and state on this rank."""

    def __init__(self, coder: BucketCoder, generator: torch.Generator):
        self.coder = coder
        self.generator = generator
        self.memory: torch.Tensor | None = None  # error feedback, on the bucket's device
        self.bytes_sent = 0
        self.layout = None
        self.key: tuple = ()
        self.chunks = None  # scatter mode: the chunk coders, their layouts, the owner's generator and memory
        self.layouts = None
        self.generator2 = None
        self.memory2 = None
        self.recv = None  # the all-gather's receive buffer, reused
        self.graphs: dict = {}  # cuda_graph: buffer address → (captured exchange, bytes it sends)
        self.seen = 0
        self.graph_safe = None


class HookState:
    """Per-bucket (or per-parameter) codec state of one rank, and the bytes it sent.

    ``exact_below``: tensors of at most this many values, and 1-D tensors, also travel exactly
    (0: none).  ``mode``: how codecs that do not sum in flight travel — ``"gather"`` (every rank
    all-gathers every message: the simulation's numbers) or ``"scatter"`` (compressed
    reduce-scatter + all-gather, see :func:`_scatter`).  ``gather_chunk``: on the CPU (gloo), an
    all-gathered message is sent as several all-gathers of at most this many bytes, all in flight
    at once (0: one), see :func:`_all_gather_chunks`.  ``per_parameter``: every codec goes parameter
    by parameter (the numbers of ``SimulatedDataParallel`` without buckets), synchronously.
    ``cuda_graph``: on CUDA, a bucket's whole exchange is captured once and replayed
    (:func:`_replayed`): the same numbers, a fraction of the host's work per bucket.
    ``draw_ahead``: on the CPU, draw each bucket's next random words on a background thread while
    the bucket is on the wire — the same numbers, in less time only where a core is free for that
    thread.  The encodes compute their words in their own loop for less work than a separate draw,
    so with one core per rank it is off (BENCHMARKS.md: slower at 10 Gbit/s, no faster at 1)."""

    def __init__(self, codec, *, model: "torch.nn.Module | None" = None, seed: int = 0, group=None,
                 exact_below: int = 0, mode: str = "gather", gather_chunk: int = 1 << 20,
                 per_parameter: bool = False, cuda_graph: bool = False, draw_ahead: bool = False):
        if mode not in ("gather", "scatter"):
            raise ValueError(f"mode is 'gather' (all-gather of every message) or 'scatter' (compressed "
                             f"reduce-scatter + all-gather), got {mode!r}")
        inner = getattr(codec, "inner", codec)
        if mode == "scatter" and (codec.traits.shared_state or inner.traits.shared_state):
            raise ValueError(f"{codec.name} keeps a public state per parameter (IntSGD's α), which the scatter "
                             "mode's chunks cut across; use mode='gather' (IntSGD sums in flight anyway)")
        if mode == "scatter" and isinstance(codec, BucketCodec):
            raise ValueError(f"{codec.name} codes whole matrices, which the scatter mode's chunks cut across; "
                             "use mode='gather'")
        self.mode = mode
        self.gather_chunk = int(gather_chunk)
        self.codec = codec
        self.seed = seed
        self.group = group
        self.exact_below = int(exact_below)
        self.index = {id(p): j for j, p in enumerate(model.parameters())} if model is not None else {}
        self.clusters: dict[int, DistributedCluster] = {}
        self.bucket_states: dict[tuple, _Bucket] = {}
        self._saved_buckets: dict = {}
        self._this_step: list = []
        self.layouts: list = []  # (first step, bucket layouts): DDP's buckets, each time they change
        self.param_states: dict[int, object] = {}  # per-parameter codec state (IntSGD's α, PowerSGD's own)
        self.steps = 0
        self.bucketed = bucketable(codec) and not per_parameter
        self._bytes_base = 0  # bytes sent before a restart (load_state_dict), by buckets not seen since
        self.cuda_graph = cuda_graph
        self.draw_ahead = bool(draw_ahead)
        self.stream = None  # cuda_graph: the side stream the replays run on, its start event, its device
        self.ready = None
        self.devices = None
        # cuda_graph: buffer address → (the buffer, its key, its bucket) once captured; holding the
        # buffer keeps its address from being reused by another tensor while the entry lives
        self.replays: dict = {}

    def _key(self, p) -> int:
        if id(p) not in self.index:  # no model given: number parameters in order of first appearance
            self.index[id(p)] = len(self.index)
        return self.index[id(p)]

    def cluster(self, p) -> DistributedCluster:
        j = self._key(p)
        if j not in self.clusters:
            self.clusters[j] = DistributedCluster(self.codec, seed=param_seed(self.seed, j), group=self.group)
        return self.clusters[j]

    def bucket(self, params, device) -> tuple[tuple, _Bucket]:
        key = tuple(self._key(p) for p in params)
        if key not in self.bucket_states:
            coder = BucketCoder(self.codec, [p.numel() for p in params], device, exact_below=self.exact_below,
                                shapes=[tuple(p.shape) for p in params])
            gen = worker_generator(bucket_seed(self.seed, key), dist.get_rank(self.group), device)
            b = _Bucket(coder, gen)
            b.key = key
            saved = self._saved_buckets.pop(key, None)  # from load_state_dict
            if saved is not None:
                b.memory = _copy(saved["memory"])  # its bytes are in _bytes_base
                b.generator.set_state(saved["generator"][1])
                b.memory2, b.saved_generator2 = _copy(saved.get("memory2")), saved.get("generator2")
            else:
                b.memory = carry_memory({k: (o.memory, o.coder.sizes) for k, o in self.bucket_states.items()},
                                        key, coder.sizes)
            self.bucket_states[key] = b
        self._this_step.append(key)
        return key, self.bucket_states[key]

    def _end_step(self) -> None:
        layout = sorted(self._this_step)
        if not self.layouts or self.layouts[-1][1] != layout:
            self.layouts.append((self.steps, layout))
        self._this_step = []
        self.steps += 1

    def states(self, key: tuple, params) -> list | None:
        """The per-parameter codec states of a bucket — public (IntSGD's α) or this rank's own
        (PowerSGD's warm start and error) — or None."""
        if not (self.codec.traits.shared_state or self.codec.traits.worker_state):
            return None
        return parameter_states(self.param_states, key, params, self.codec)

    def buckets(self) -> list:
        """The bucket layouts seen: [(first step, [parameter positions of each bucket, in the
        bucket's order]), …], one entry each time DDP laid them out anew (it does once, after
        the first step); pass it to ``SimulatedDataParallel(buckets=…)``."""
        return [(s, [list(k) for k in lay]) for s, lay in self.layouts]

    @property
    def bytes_sent(self) -> int:
        return (self._bytes_base + sum(c.bytes_sent for c in self.clusters.values())
                + sum(b.bytes_sent for b in self.bucket_states.values()))

    @property
    def wire_bytes(self) -> int:
        return (self._bytes_base + sum(c.wire_bytes for c in self.clusters.values())
                + sum(b.bytes_sent for b in self.bucket_states.values()))

    def observe(self, lr: float, step_sq_norm) -> None:
        """Adaptive IntSGD: update α of every parameter from the step just taken (public):
        ``step_sq_norm`` is ‖x_{k+1} − x_k‖² of the whole model, or a sequence of each parameter's
        own (layer-wise α, as the deep runner uses), indexed by position in ``model.parameters()``."""
        observe_states(self.codec, [*self.param_states.items(), *((j, c.state) for j, c in self.clusters.items())],
                       lr, step_sq_norm)

    def state_dict(self) -> dict:
        return {"seed": self.seed, "steps": self.steps, "exact_below": self.exact_below, "layouts": list(self.layouts),
                "bytes_base": self._bytes_base,
                "clusters": {j: c.state_dict() for j, c in self.clusters.items()},
                "param_states": copy.deepcopy(self.param_states),  # PowerSGD's error changes in place later
                "buckets": {k: {"memory": _copy(b.memory), "generator": (str(b.generator.device), b.generator.get_state()),
                                "bytes_sent": b.bytes_sent, "memory2": _copy(b.memory2),
                                "generator2": b.generator2.get_state() if b.generator2 is not None else None}
                            for k, b in self.bucket_states.items()}}

    def load_state_dict(self, sd: dict) -> None:
        self.seed, self.steps = sd["seed"], sd["steps"]
        self.exact_below = sd.get("exact_below", 0)
        self.layouts = list(sd.get("layouts", []))
        self.clusters = {}
        for j, s in sd["clusters"].items():
            c = DistributedCluster(self.codec, seed=param_seed(self.seed, j), group=self.group)
            c.load_state_dict(s)
            self.clusters[j] = c
        self.param_states = copy.deepcopy(sd.get("param_states", {}))
        self._saved_buckets = dict(sd.get("buckets", {}))  # restored when DDP shows each bucket again
        self._bytes_base = sd.get("bytes_base", 0) + sum(b["bytes_sent"] for b in self._saved_buckets.values())
        self.bucket_states = {}
        self.replays = {}


def _copy(t):
    """A snapshot of an error-feedback memory, which later steps update in place."""
    return t.clone() if t is not None else None


def _per_parameter(state: HookState, bucket) -> torch.futures.Future[torch.Tensor]:
    """Codecs without a multi-tensor path: one message per parameter, exchanged synchronously."""
    buf = bucket.buffer()
    grads = bucket.gradients()
    clusters = [state.cluster(p) for p in bucket.parameters()]
    # in the parameters' shapes; the IntSGD paper's width counts (a collective more) are not wanted here
    results = exchange_all(clusters, [g.detach() for g in grads], counts=False)
    for g, (_, mean, _) in zip(grads, results):
        g.copy_(mean.reshape(g.shape).to(g.dtype))  # g is a view into the bucket's buffer
    fut = torch.futures.Future()
    fut.set_result(buf)
    return fut


def _chunk_coders(coder: BucketCoder, n: int) -> list:
    """(lo, hi, coder of the pieces of tensors in [lo, hi)) for n equal chunks of a bucket."""
    d = sum(coder.sizes)
    c = -(-d // n)
    out = []
    for k in range(n):
        lo, hi = min(k * c, d), min((k + 1) * c, d)
        pieces = [min(hi, coder.offsets[j + 1]) - max(lo, coder.offsets[j]) for j in range(len(coder.sizes))
                  if coder.offsets[j] < hi and coder.offsets[j + 1] > lo]
        out.append((lo, hi, BucketCoder(coder.codec, pieces, coder.device) if pieces else None))
    return out


def _scatter(state: "HookState", b: "_Bucket", flat, exact, n: int, finish):
    """Compressed reduce-scatter + all-gather: rank r sends chunk k of its coded bucket to rank k
    (one all-to-all), decodes and averages the n messages of its own chunk r, codes that partial
    mean once more and all-gathers it; every rank decodes the n chunks.  Each rank decodes about
    two buckets' worth whatever n, and sends about 2(n−1)/n of a message (the all-gather mode:
    n − 1 messages).  ``bytes_sent`` counts the chunks sent to others and the re-coded chunk.  The mean is compressed twice — what CGX, DeepSpeed's compressed all-reduce and
    Bagua do — so it does not reproduce the simulation, which the all-gather mode does; error
    feedback keeps a second memory for the owner's re-encoding (as 1-bit Adam's server error)."""
    group, rank = state.group, dist.get_rank(state.group)
    if b.chunks is None:
        b.chunks = _chunk_coders(b.coder, n)
        b.layouts = [None] * n
        b.generator2 = worker_generator(bucket_seed(state.seed, b.key) + 1, rank, flat.device)
        if getattr(b, "saved_generator2", None) is not None:
            b.generator2.set_state(b.saved_generator2)
    msgs = []
    for k, (lo, hi, cc) in enumerate(b.chunks):
        if cc is None:
            msgs.append(torch.zeros(0, dtype=torch.uint8, device=flat.device))
            continue
        mem = b.memory[lo:hi] if b.memory is not None else None
        p, new = cc.encode(flat[lo:hi], generator=b.generator, memory=mem)
        if new is not None:
            if b.memory is None:
                b.memory = torch.zeros_like(flat)
            b.memory[lo:hi] = new
        if b.layouts[k] is None:
            b.layouts[k] = cc.byte_layout(p)
        msgs.append(cc.to_bytes(p, flat[:0], b.layouts[k]))
        if k != rank:  # the own chunk stays here
            b.bytes_sent += cc.nbytes(p)
    sizes = [m.numel() for m in msgs]
    recv = torch.empty(n * sizes[rank], dtype=torch.uint8, device=flat.device)
    side = dist.all_reduce(exact, group=group, async_op=True) if exact.numel() else None
    work = dist.all_to_all_single(recv, torch.cat(msgs), [sizes[rank]] * n, sizes, group=group, async_op=True)
    width = max(sizes)

    def second(_=None):
        lo, hi, cc = b.chunks[rank]
        mine = torch.zeros(width, dtype=torch.uint8, device=flat.device)
        if cc is not None:
            parts = [cc.from_bytes(piece, b.layouts[rank])[0] for piece in recv.view(n, -1)]
            partial = cc.mean_decoded(parts, torch.empty(hi - lo, device=flat.device))
            p, b.memory2 = cc.encode(partial, generator=b.generator2, memory=b.memory2)
            b.bytes_sent += cc.nbytes(p)
            mine[: sizes[rank]] = cc.to_bytes(p, flat[:0], b.layouts[rank])
        got = torch.empty(n * width, dtype=torch.uint8, device=flat.device)
        return got, _all_gather_into(got, mine, group=group, async_op=True)

    def last(got):
        for k, (lo, hi, cc) in enumerate(b.chunks):
            if cc is not None:
                payload, _ = cc.from_bytes(got[k * width : k * width + sizes[k]], b.layouts[k])
                cc.inner.flat_decode(payload, cc.segments, out=flat[lo:hi])
        if side is not None:
            side.wait()
        return finish(exact.div_(n))

    # The second collective starts from the hook, not from a callback: gloo runs callbacks on its
    # own threads, in an order that differs between ranks when several buckets are in flight (a
    # collective mismatch).  NCCL's wait only orders the streams; gloo's blocks until the chunks are in.
    work.wait()
    got, w2 = second()
    return w2.get_future().then(lambda _f: last(got))


def compressed_hook(state: HookState, bucket) -> torch.futures.Future[torch.Tensor]:
    """The DDP communication hook (``register_comm_hook(state, compressed_hook)``)."""
    if not state.bucketed:
        if bucket.is_last():
            state.steps += 1
        return _per_parameter(state, bucket)
    buf = bucket.buffer()
    hit = state.replays.get(buf.data_ptr()) if state.cuda_graph else None
    if hit is not None:  # a captured bucket: neither its parameters nor its key are looked up again
        state._this_step.append(hit[1])
        if bucket.is_last():
            state._end_step()
        return _replay(state, hit[2], buf)
    params = bucket.parameters()
    key, b = state.bucket(params, buf.device)
    if bucket.is_last():
        state._end_step()
    n = dist.get_world_size(state.group)
    if state.mode == "scatter" and not b.coder.summable:
        flat = buf if buf.dtype == torch.float32 else buf.float()
        return _scatter(state, b, flat, b.coder.exact_part(flat), n, _finisher(b.coder, flat, buf))
    if state.cuda_graph and buf.is_cuda:
        fut = _replayed(state, key, b, buf, params, n)
        if fut is not None:
            return fut
    start, done = _exchange(state, key, b, buf, params, n)
    return start(True).then(lambda _fut: done())


def _finisher(coder: BucketCoder, flat: torch.Tensor, buf: torch.Tensor):
    def finish(mean_exact: torch.Tensor) -> torch.Tensor:
        coder.join(flat, mean_exact)
        if flat is not buf:
            buf.copy_(flat)
        return buf

    return finish


def _exchange(state: HookState, key: tuple, b: _Bucket, buf: torch.Tensor, params, n: int):
    """Encode this rank's message of the bucket; returns (start, done): ``start(async_op)`` issues
    the collectives (a future of their completion when ``async_op``), ``done()`` then writes the
    mean of the n decoded messages into the bucket's buffer and returns it."""
    coder, group = b.coder, state.group
    flat = buf if buf.dtype == torch.float32 else buf.float()
    exact = coder.exact_part(flat)
    finish = _finisher(coder, flat, buf)
    # HintSGD: every rank's scales from the maximum over ranks of its ‖g_j‖∞ (a small all-reduce, waited for)
    states = coder.agree(flat, group) if coder.agreed else state.states(key, params)
    payload, b.memory, own = coder.encode_decoded(flat, generator=b.generator, memory=b.memory, states=states)
    b.bytes_sent += coder.nbytes(payload)
    if state.draw_ahead:  # CPU stochastic codecs: next step's words while this bucket is on the wire
        draw_ahead(b.generator)
    side = []  # the exact values' all-reduce

    def exact_sum(async_op: bool) -> None:
        if exact.numel():
            side.append(dist.all_reduce(exact, group=group, async_op=async_op))

    def exact_mean() -> torch.Tensor:
        if side and side[0] is not None:
            side[0].wait()
        return exact.div_(n)

    if coder.summable:
        send = coder.to_sum_buffer(payload)
        wide = send.to(torch.int32) if send.dtype == torch.int16 else send  # neither gloo nor NCCL sums int16

        def start(async_op: bool):
            exact_sum(async_op)
            work = dist.all_reduce(wide, group=group, async_op=async_op)
            return work.get_future() if async_op else None

        def done() -> torch.Tensor:
            total = send if wide is send else wide.to(send.dtype)  # the clamp makes the sum fit
            coder.decode_sum(coder.from_sum_buffer(total, payload), n, flat)
            return finish(exact_mean())

        return start, done
    if b.layout is None:
        b.layout = coder.byte_layout(payload)
    mine = coder.to_bytes(payload, exact, b.layout)
    if mine.device.type != "cpu":
        got = torch.empty(n * mine.numel(), dtype=torch.uint8, device=mine.device)
    else:  # a fresh buffer costs its page faults every step; DDP decodes it before the bucket comes again
        if b.recv is None or b.recv.numel() != n * mine.numel():
            b.recv = torch.empty(n * mine.numel(), dtype=torch.uint8)
        got = b.recv

    def start(async_op: bool):
        if not async_op:
            _all_gather_into(got, mine, group=group)
            return None
        if mine.device.type == "cpu" and 0 < state.gather_chunk < mine.numel():
            return _all_gather_chunks(got, mine, n, state.gather_chunk, group)
        return _all_gather_into(got, mine, group=group, async_op=True).get_future()

    def done() -> torch.Tensor:
        parts = [coder.from_bytes(piece, b.layout) for piece in got.view(n, -1)]
        known = {dist.get_rank(group): own} if own is not None else None  # error feedback decoded it already
        coder.mean_decoded([p for p, _ in parts], flat, known)
        return finish(coder.mean_exact([e for _, e in parts]) if exact.numel() else exact)

    return start, done


def _replayed(state: HookState, key: tuple, b: _Bucket, buf: torch.Tensor, params, n: int):
    """The bucket's exchange replayed from a CUDA graph (``cuda_graph=True``), or None where it
    runs eagerly: the first time a bucket buffer is seen (kernels compiled, communicators and
    states made), and for codecs whose step reads values from the host (IntSGD's adaptive α,
    PowerSGD's factors) or launches what a graph cannot hold.  The second time the encode,
    the collective and the decode are captured once (the NCCL collective with them); from then on
    one replay on a side stream does all of it, and the returned future is a CUDA future whose
    value DDP's stream waits for, so the rest of backward still overlaps it.  The numbers are the
    eager hook's: the codec's generator is registered with the graph, so replay k draws what the
    k-th eager call would."""
    if b.graph_safe is None:  # the codec's configuration and the buffer's device and dtype decide
        b.graph_safe = many.graph_safe(b.coder.inner, buf, state.states(key, params)) and not b.coder.matrices
    if not b.graph_safe:
        return None
    entry = b.graphs.get(buf.data_ptr())
    if entry is None:
        b.seen += 1
        if b.seen < 2:
            return None
        before = b.bytes_sent
        graph = torch.cuda.CUDAGraph()
        if b.generator.device.type == "cuda":
            graph.register_generator_state(b.generator)
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            start, done = _exchange(state, key, b, buf, params, n)
            start(False)
            done()
        b.graphs[buf.data_ptr()] = (graph, b.bytes_sent - before)
        b.bytes_sent = before
        state.replays[buf.data_ptr()] = (buf, key, b)
    return _replay(state, b, buf)


def _replay(state: HookState, b: _Bucket, buf: torch.Tensor) -> torch.futures.Future:
    """One replay of the bucket's captured exchange on the side stream, after the work queued so
    far on the current stream; a CUDA future of the bucket's buffer."""
    graph, nbytes = b.graphs[buf.data_ptr()]
    if state.stream is None:
        state.stream = torch.cuda.Stream(buf.device)
        state.ready = torch.cuda.Event()
        state.devices = [buf.device]
    here = torch.cuda.current_stream(state.devices[0].index)  # an index: half the host time of a device
    state.ready.record(here)
    state.stream.wait_event(state.ready)
    torch.cuda.set_stream(state.stream)  # a bare switch: a tenth of ``with torch.cuda.stream``'s host time
    try:
        graph.replay()
        fut = torch.futures.Future(devices=state.devices)
        fut.set_result(buf)
    finally:
        torch.cuda.set_stream(here)
    b.bytes_sent += nbytes
    return fut


def _all_gather_chunks(got: torch.Tensor, mine: torch.Tensor, n: int, chunk: int, group) -> torch.futures.Future:
    """All-gather ``mine`` of every rank into ``got`` (rank r's at [r·m, (r+1)·m)) as several
    all-gathers of at most ``chunk`` bytes, all in flight, joined in one future.  Over gloo and a
    slow link one large all-gather runs well below the link's rate (2 ranks, 1 Gbit/s, 11.2 MB:
    0.15 s, where an all-reduce of the same bytes takes 0.10 s); chunks of 1 MiB reach it."""
    m = mine.numel()
    works = [dist.all_gather([got[r * m + lo : r * m + min(m, lo + chunk)] for r in range(n)],
                             mine[lo : min(m, lo + chunk)], group=group, async_op=True)
             for lo in range(0, m, chunk)]
    return torch.futures.collect_all([w.get_future() for w in works])


def hook_for(compressor, *, model: "torch.nn.Module | None" = None, seed: int = 0, group=None, exact_below: int = 0,
             mode: str = "gather", gather_chunk: int = 1 << 20, per_parameter: bool = False, cuda_graph: bool = False,
             draw_ahead: bool = False, **options):
    """(state, hook) for ``DistributedDataParallel.register_comm_hook`` with a compressor (a name
    with ``options``, or a Compressor).  Pass the unwrapped ``model`` so that parameters are
    numbered as in the simulation."""
    codec = get_compressor(compressor, **options)
    if codec.traits.factored:
        raise ValueError(f"{codec.name} sends a layer's inputs and output errors, which a gradient hook never "
                         "sees; train it with lowbit's simulated workers (lowbit.compress.isgq.Factored)")
    if not dist.is_initialized():
        raise RuntimeError("hook_for needs torch.distributed initialized (lowbit.distributed.init() under torchrun)")
    state = HookState(codec, model=model, seed=seed, group=group, exact_below=exact_below, mode=mode,
                      gather_chunk=gather_chunk, per_parameter=per_parameter, cuda_graph=cuda_graph,
                      draw_ahead=draw_ahead)
    return state, compressed_hook


__all__ = ["HookState", "compressed_hook", "hook_for", "param_seed"]
