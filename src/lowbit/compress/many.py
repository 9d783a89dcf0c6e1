"""Many tensors in one codec call: the multi-tensor path (:class:`MultiTensor`, :func:`roundtrip_many`).

Every codec here has the form C(g) = s(g) · U(g / s(g)): a per-tensor scale s (‖g‖₂ for QSGD,
max|g| for TernGrad, ‖g‖₁/d for scaled signSGD, 1/α for IntSGD, none for casts and natural
compression) and an elementwise unit coder U.  The gradients of a model are therefore coded
together: they are copied once into one flat buffer (each in its memory order, so channels-last
weights need no transpose), their scales come from one ``torch._foreach_norm``, U runs once over
the buffer (the fused kernels read each coordinate's scale through a cached tensor-number index,
:class:`Segments`), and the results are handed back as views of it — a few kernel launches per
step instead of several per parameter.  Each tensor is still its own message: the values have exactly
the per-tensor codec's distribution (the same values for deterministic codecs, up to float
rounding of g/s·s) and the bytes counted are Σ_j wire_bytes(d_j), the sum of the per-tensor
packets' sizes.
"""

from __future__ import annotations

import torch

from ..kernels import cpu
from ..kernels.cpu import scratch


class MultiTensor:
    """Protocol (a mixin with defaults) of the codecs that take the multi-tensor path: codecs of
    the form C(g) = s(g)·U(g/s(g)), with a per-tensor scale s (:meth:`tensor_scales`) and an
    elementwise unit coder U (:meth:`unit_encode`/:meth:`unit_decode`), whose packet sizes depend
    on the sizes only (:meth:`wire_bytes`).  The defaults build every flat operation from those
    three; codecs with fused kernels override the flat ones."""

    #: the per-tensor scales follow from a vector the workers agree on by its maximum (HintSGD's
    #: max_i ‖g_ij‖∞): :meth:`agreement` of each worker's tensors, all-reduced (max) and passed as
    #: ``states`` before coding; without ``states`` each worker uses its own
    agreed_scales = False
    #: the integers' container is agreed after coding, from the largest magnitude over the workers
    #: (IntSGD's automatic width): :meth:`payload_peak`, all-reduced (max), then
    #: :meth:`conform_payload`; the sizes then depend on the data, so only a bucket of one tensor
    #: (a parameter, a DIANA vector) takes it, never a DDP bucket
    agreed_container = False

    def agreement(self, tensors) -> torch.Tensor:
        """This worker's vector of the agreement (``agreed_scales`` codecs)."""
        raise NotImplementedError(f"{type(self).__name__} has no agreement")

    def batchable(self, states=None) -> bool:
        """Whether :func:`roundtrip_many` may code tensors with these states in one flat call."""
        return True

    def graph_safe(self, flat: torch.Tensor, states=None) -> bool:
        """Whether :meth:`flat_roundtrip` on ``flat`` may be captured in a CUDA graph and replayed:
        device work only, no host value that changes from step to step, no host sync."""
        return False

    def tensor_scales(self, tensors, states=None) -> torch.Tensor | None:
        """The per-tensor scales s_j (a float32 vector), or None where C is elementwise (s = 1)."""
        return None

    def flat_encode(self, flat: torch.Tensor, tensors, segments, *, states=None, generator=None) -> dict:
        """The messages of every tensor g_j of ``tensors`` (views of ``flat``, the segments of
        ``segments``) laid end to end as one payload: ``"scales"`` the per-tensor s_j (float32,
        absent where C is elementwise), then the fields of U(g/s) over the whole buffer.  Field
        sizes depend on the sizes only, never on the data (:meth:`batchable` codecs), so a
        receiver knows where each field starts.  Codecs with fused kernels override this to read
        the scales per segment inside the kernel."""
        scales = self.tensor_scales(tensors, states)
        if scales is None:
            return dict(self.unit_encode(flat, generator))
        # s = 0: an all-zero tensor, sent as zeros; NaN or inf scales make the tensor non-finite
        if flat.device.type == "cpu" and flat.dtype == torch.float32:  # tensor by tensor, a reused buffer, no spread
            u = scratch(flat.numel(), torch.float32, 2)
            for part, o, s in zip(flat.split(segments.sizes), u.split(segments.sizes), torch.where(scales == 0, 1.0, scales)):
                torch.div(part, s, out=o)
            return {"scales": scales, **self.unit_encode(u, generator)}
        s = segments.spread(scales)
        return {"scales": scales, **self.unit_encode(flat / torch.where(s == 0, 1.0, s), generator)}

    def flat_decode(self, payload: dict, segments, *, out: torch.Tensor | None = None) -> torch.Tensor:
        """The flat buffer s_j · U⁻¹(codes) of a :meth:`flat_encode` payload (for summable codecs
        also of the in-flight sum of several), written into ``out`` when given."""
        scales = payload.get("scales")
        codes = {k: v for k, v in payload.items() if k != "scales"}
        if scales is None:
            return self.unit_decode(codes, segments.total, out=out)
        if out is not None and out.device.type == "cpu" and out.is_contiguous():
            # into out, then each tensor times its scale in place: the same products, no spread copy
            self.unit_decode(codes, segments.total, out=out)
            for part, s in zip(out.reshape(-1).split(segments.sizes), scales):
                part.mul_(s)
            return out
        r = self.unit_decode(codes, segments.total) * segments.spread(scales)
        return r if out is None else out.copy_(r)

    def flat_feedback(self, v: torch.Tensor, tensors, segments, *, states=None, generator=None,
                      out: torch.Tensor | None = None) -> tuple[dict, torch.Tensor | None]:
        """Error feedback's step on a flat buffer (Seide et al.; Karimireddy et al.): the payload of
        C(v), and v ← v − C(v) in place; also returns C(v) decoded (into ``out``), or None where a
        codec updates v without building it (a receiver then decodes the payload itself)."""
        payload = self.flat_encode(v, tensors, segments, states=states, generator=generator)
        decoded = self.flat_decode(payload, segments, out=out)
        v.sub_(decoded)
        return payload, decoded

    def flat_mean(self, payloads: list, segments, out: torch.Tensor) -> torch.Tensor | None:
        """(1/n)·Σ_i of the :meth:`flat_decode` of n payloads, summed in list order, written into
        ``out`` — where a codec has a faster way than decoding each and adding (the same
        values), else None."""
        return None

    def unit_encode(self, u: torch.Tensor, generator=None) -> dict:
        """The payload fields of U(u), u a flat vector of scaled values."""
        raise NotImplementedError(f"{self.name} has no elementwise unit coder")

    def unit_decode(self, payload: dict, n: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """U⁻¹: the float32 values of ``n`` unit codes (written into ``out`` when given)."""
        raise NotImplementedError(f"{self.name} has no elementwise unit coder")

    def unit_roundtrip(self, u: torch.Tensor, generator=None) -> torch.Tensor:
        """U(u): the elementwise part of the codec, on the flat vector of scaled values."""
        return self.unit_decode(self.unit_encode(u.reshape(-1), generator), u.numel()).reshape(u.shape).to(u.dtype)

    def flat_roundtrip(self, flat: torch.Tensor, tensors, segments, *, states=None, generator=None,
                       out: torch.Tensor | None = None) -> torch.Tensor:
        """s_j · U(g_j/s_j) for every tensor g_j of ``tensors`` (views of ``flat``, in order: the
        segments of ``segments``), with s_j = :meth:`tensor_scales` (none: U(g)), written into
        ``out`` when given: the values of :meth:`flat_decode` of :meth:`flat_encode`, without
        building the codes where a codec can (the simulation's shortcut)."""
        scales = self.tensor_scales(tensors, states)
        if scales is None:
            r = self.unit_roundtrip(flat, generator)
        else:
            s = segments.spread(scales)
            r = self.unit_roundtrip(flat / torch.where(s == 0, 1.0, s), generator) * s
        return r if out is None else out.copy_(r)

    def wire_bytes(self, numel: int) -> int:
        """Bytes of the packet of a tensor of ``numel`` values (batchable codecs: data-independent)."""
        raise NotImplementedError(f"{self.name} packet sizes depend on the data")

    # Batched runs (lowbit.distributed.SimulatedCluster given R × n × d rows: R independent runs of n
    # workers each, e.g. seeds): C(v) = s_r·U(v/s_r) with a scale s_r that run r's workers share.
    def run_scales(self, rows: torch.Tensor, state=None) -> torch.Tensor | None:
        """Each run's shared scale s_r (R × 1 × 1), or None where C is elementwise without one."""
        if self.traits.elementwise and not self.traits.shared_state:
            return None
        raise NotImplementedError(f"{self.name} cannot code batched runs")

    def run_bits(self, units: torch.Tensor) -> dict:
        """{"bits": the bits of each run's n packets} (R values) for unit-coded rows (R × n × d)."""
        R, n, d = units.shape
        return {"bits": torch.full((R,), 8.0 * n * self.wire_bytes(d), dtype=torch.float64)}


def memory_order(t: torch.Tensor):
    """(dims order, dense) with t.permute(order) contiguous when t is dense in some layout."""
    order = sorted(range(t.dim()), key=lambda i: (-t.stride(i), -t.shape[i]))
    return order, t.permute(order).is_contiguous()


def flatten(tensors) -> tuple[torch.Tensor, list]:
    """One float32 buffer holding every tensor in its memory order, and the layouts to undo it."""
    flats, layouts = [], []
    for t in tensors:
        order, dense = memory_order(t)
        if dense:
            u = t.permute(order)
            flats.append(u.reshape(-1))
            layouts.append((t.shape, tuple(u.shape), order, t.dtype))
        else:
            flats.append(t.reshape(-1))
            layouts.append((t.shape, tuple(t.shape), list(range(t.dim())), t.dtype))
    flat = torch.cat(flats) if flats else torch.zeros(0)
    return flat.to(torch.float32), layouts


def unflatten(flat: torch.Tensor, layouts) -> list[torch.Tensor]:
    """Views of ``flat`` with the shapes and strides :func:`flatten` recorded (copies only where
    the dtype differs)."""
    out, off = [], 0
    for shape, permuted, order, dtype in layouts:
        n = 1
        for s in shape:
            n *= s
        inverse = [0] * len(order)
        for i, o in enumerate(order):
            inverse[o] = i
        v = flat[off : off + n].view(permuted).permute(inverse)
        out.append(v if dtype == torch.float32 else v.to(dtype))
        off += n
    return out


def sizes_of(tensors) -> list[int]:
    return [t.numel() for t in tensors]


class Segments:
    """A flat buffer's partition into consecutive tensors of ``sizes``, and ``index``: the int32
    tensor number of every coordinate (built on first use, then kept; per-tensor scales are read
    through it inside the fused kernels, so no per-coordinate scale vector is ever made)."""

    def __init__(self, sizes, device):
        self.sizes = list(sizes)
        self.device = torch.device(device)
        self.total = sum(self.sizes)
        self._index = None
        self._bytes: dict = {}

    def wire_bytes(self, codec) -> int:
        """Σ_j codec.wire_bytes(d_j), kept per codec configuration."""
        key = repr(codec)
        if key not in self._bytes:
            self._bytes[key] = sum(codec.wire_bytes(n) for n in self.sizes)
        return self._bytes[key]

    @property
    def index(self) -> torch.Tensor:
        if self._index is None:
            ids = torch.arange(len(self.sizes), dtype=torch.int32)
            self._index = torch.repeat_interleave(ids, torch.as_tensor(self.sizes)).to(self.device)
        return self._index

    def byte_index(self, k: int) -> torch.Tensor:
        """The tensor number of the first value of each whole group of k values (a byte of k
        packed codes), in the narrowest integer type that holds it (uint8 up to 256 tensors):
        CPU loops over packed codes read each byte's tensor from it (kept per k)."""
        if not hasattr(self, "_byte_index"):
            self._byte_index = {}
        if k not in self._byte_index:
            count = len(self.sizes)
            dtype = torch.uint8 if count <= 256 else torch.int16 if count <= 1 << 15 else torch.int32
            self._byte_index[k] = self.index[: self.total // k * k : k].to(dtype).contiguous()
        return self._byte_index[k]

    def byte_runs(self, k: int, big: int = 1 << 16) -> list:
        """Runs of the whole bytes of k packed codes, (first byte, end byte, tensor number, index):
        byte b belongs to the tensor of its first value; a tensor of ``big`` values or more is a
        run of its own (index None), consecutive smaller ones share one whose ``index`` is the
        slice of :meth:`byte_index` (a loop that reads a per-tensor value through an index
        gathers it value by value: for a large tensor one call without it is cheaper)."""
        if not hasattr(self, "_byte_runs"):
            self._byte_runs = {}
        if (k, big) not in self._byte_runs:
            full, runs, pos = self.total // k, [], 0
            for j, size in enumerate(self.sizes):
                b0, b1 = min(full, -(-pos // k)), min(full, -(-(pos + size) // k))
                pos += size
                if b1 <= b0:
                    continue
                if size < big and runs and runs[-1][3] is not None and runs[-1][1] == b0:
                    runs[-1][1] = b1
                else:
                    runs.append([b0, b1, j, None if size >= big else True])
            index = self.byte_index(k)
            self._byte_runs[(k, big)] = [(b0, b1, j, None if ix is None else index[b0:b1]) for b0, b1, j, ix in runs]
        return self._byte_runs[(k, big)]

    def block_plan(self, block: int):
        """(starts, lengths, blocks per segment, first block of each segment, the most blocks of one
        segment) of blocks of at most ``block`` values that each lie inside one segment (tensors on
        the device), kept per block size."""
        if not hasattr(self, "_plans"):
            self._plans = {}
        if block not in self._plans:
            starts, lengths, per, off = [], [], [], 0
            for s in self.sizes:
                k = -(-s // block)
                starts += [off + i * block for i in range(k)]
                lengths += [min(block, s - i * block) for i in range(k)]
                per.append(k)
                off += s
            first = [0]
            for k in per[:-1]:
                first.append(first[-1] + k)
            self._plans[block] = (torch.tensor(starts, dtype=torch.int64).to(self.device),
                                  torch.tensor(lengths, dtype=torch.int32).to(self.device),
                                  torch.tensor(per, dtype=torch.int64).to(self.device),
                                  torch.tensor(first, dtype=torch.int64).to(self.device), max(per, default=0))
        return self._plans[block]

    @property
    def lengths(self) -> torch.Tensor:
        """The sizes as an int64 tensor on the device (``torch.segment_reduce``'s lengths)."""
        if getattr(self, "_lengths", None) is None:
            self._lengths = torch.as_tensor(self.sizes, dtype=torch.int64).to(self.device)
        return self._lengths

    @property
    def ends(self) -> torch.Tensor:
        """The running total of the sizes (int64, on the device): where each segment ends."""
        if getattr(self, "_ends", None) is None:
            self._ends = torch.cumsum(torch.as_tensor(self.sizes, dtype=torch.int64), 0).to(self.device)
        return self._ends

    def spread(self, values: torch.Tensor) -> torch.Tensor:
        """values[j] at every coordinate of tensor j."""
        return values.index_select(0, self.index)


_SEGMENTS: dict = {}


def segments(sizes, device) -> Segments:
    """The :class:`Segments` of ``sizes`` on ``device``, kept for the few most recent layouts."""
    key = (tuple(sizes), str(device))
    if key not in _SEGMENTS:
        if len(_SEGMENTS) >= 8:
            _SEGMENTS.pop(next(iter(_SEGMENTS)))
        _SEGMENTS[key] = Segments(sizes, device)
    return _SEGMENTS[key]


def segment_sums(values: torch.Tensor, seg: Segments) -> torch.Tensor:
    """Σ of each segment of a flat buffer: ``torch.segment_reduce`` on the GPU (``unsafe``: the
    lengths are the segments' own, and its checks of them read values on the host); on the CPU one
    sum per segment (its CPU kernel is serial: 20× slower there)."""
    if values.is_cuda:
        return torch.segment_reduce(values, "sum", lengths=seg.lengths, unsafe=True)
    return torch.stack([v.sum() for v in values.split(seg.sizes)]) if seg.sizes else values.new_zeros(0)


def per_segment_where(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor, seg: Segments, out=None) -> torch.Tensor:
    """a_j where ``mask`` is set, b_j elsewhere, for every coordinate of segment j: on the GPU
    through the spread values; on the CPU segment by segment, each a gather from its two values
    (b_j, a_j) by the mask as 0/1 indices (the same values as ``torch.where``, 4× faster there)."""
    if mask.is_cuda:
        v = torch.where(mask, seg.spread(a), seg.spread(b))
        return v if out is None else out.copy_(v)
    out = torch.empty(mask.shape, dtype=a.dtype) if out is None else out
    flat = out.reshape(-1) if out.is_contiguous() else torch.empty(out.numel(), dtype=a.dtype)
    idx = scratch(mask.numel(), torch.int32).copy_(mask.reshape(-1))
    pairs = torch.stack([b, a], 1).to(a.dtype)  # row j: (b_j, a_j)
    for j, (i, o) in enumerate(zip(idx.split(seg.sizes), flat.split(seg.sizes))):
        torch.index_select(pairs[j], 0, i, out=o)
    return out if flat.data_ptr() == out.data_ptr() else out.copy_(flat.view(out.shape))


def foreach_norms(tensors, ord) -> torch.Tensor:
    """The ord-norms of the tensors, as one float32 vector (float64 accumulation for ord 2, and
    for ord 1 on the CPU)."""
    tensors = list(tensors)
    if ord == 2 and tensors and _compiled_norms(tensors):
        return torch.stack([norm_float64(t) for t in tensors]).to(torch.float32)
    if ord == 1 and tensors and _cpu_float32(tensors):
        return torch.stack([l1_float64(t) for t in tensors]).to(torch.float32)
    if ord == 2:
        try:
            return torch.stack(torch._foreach_norm(tensors, 2, dtype=torch.float64)).to(torch.float32)
        except (TypeError, RuntimeError):
            return torch.stack([torch.linalg.vector_norm(t, dtype=torch.float64) for t in tensors]).to(torch.float32)
    if ord == float("inf") and tensors and tensors[0].device.type == "cpu":
        return torch.stack([_max_abs(t) for t in tensors]).to(torch.float32)
    return torch.stack(torch._foreach_norm(tensors, ord)).to(torch.float32)


def _cpu_float32(tensors) -> bool:
    """Whether every tensor is a CPU float32 tensor."""
    return all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)


def _compiled_norms(tensors) -> bool:
    """Whether CPU float32 tensors this large take :func:`norm_float64`'s compiled sums."""
    return _cpu_float32(tensors) and cpu.compiling() and sum(t.numel() for t in tensors) >= cpu.MIN_VALUES


def norm_float64(t: torch.Tensor) -> torch.Tensor:
    """‖t‖₂ in float64 of a CPU float32 tensor: from one compiled loop of float64 squares when
    it is large (:func:`lowbit.kernels.cpu.sum_squares`, whose float32 rounding is the same),
    else ``vector_norm(t, dtype=float64)``."""
    if t.numel() >= cpu.EACH_MIN and t.is_contiguous():
        s = cpu.call(cpu.sum_squares, t.reshape(-1))
        if s is not None:
            return s.sqrt()
    return torch.linalg.vector_norm(t, dtype=torch.float64)


def l1_float64(t: torch.Tensor) -> torch.Tensor:
    """‖t‖₁ in float64 of a CPU float32 tensor: one compiled loop when it is large
    (:func:`lowbit.kernels.cpu.sum_abs`), else torch's float64 sum; the same float32 rounding."""
    if t.numel() >= cpu.EACH_MIN and t.is_contiguous() and cpu.compiling():
        s = cpu.call(cpu.sum_abs, t.reshape(-1))
        if s is not None:
            return s
    return t.to(torch.float64).abs().sum()


def _max_abs(t: torch.Tensor) -> torch.Tensor:
    """max|t| (NaN if t holds one, 0 if empty) from one ``aminmax`` pass: the inf-norm, exactly,
    without the CPU's inf-norm reduction (16× slower on one thread)."""
    if t.numel() == 0:
        return t.new_zeros(())
    lo, hi = torch.aminmax(t)
    return torch.maximum(hi, -lo).abs()


def roundtrip_flat(codec, tensors, *, states=None, generator=None, flat=None, out=None):
    """(flat input, flat decoded output, layouts, bytes): every tensor coded as its own message in
    one pass.  ``flat``: the tensors already flattened (they are views of it), so no copy is made;
    ``out``: where the decoded values go (may be ``flat`` itself)."""
    tensors = list(tensors)
    layouts = None
    if flat is None:
        flat, layouts = flatten(tensors)
    seg = segments(sizes_of(tensors), flat.device)
    out = codec.flat_roundtrip(flat, tensors, seg, states=states, generator=generator, out=out)
    return flat, out, layouts, seg.wire_bytes(codec)


def roundtrip_many(codec, tensors, *, states=None, generator=None):
    """([decode(encode(t)) for t in tensors], total bytes), through one flat call when the codec
    allows it (:func:`batchable`), else tensor by tensor."""
    tensors = list(tensors)
    if not tensors:
        return [], 0
    if batchable(codec, states) and len({t.device for t in tensors}) == 1:
        _, out, layouts, nbytes = roundtrip_flat(codec, tensors, states=states, generator=generator)
        return unflatten(out, layouts), nbytes
    outs, total = [], 0
    for j, t in enumerate(tensors):
        o, nb = codec.roundtrip(t, state=None if states is None else states[j], generator=generator)
        outs.append(o)
        total += nb
    return outs, total


def batchable(codec, states=None) -> bool:
    """Whether ``codec`` codes tensors with these states in one flat call (:class:`MultiTensor`)."""
    return isinstance(codec, MultiTensor) and codec.batchable(states)


def graph_safe(codec, flat: torch.Tensor, states=None) -> bool:
    """Whether ``codec``'s flat call on ``flat`` may be captured in a CUDA graph and replayed."""
    return isinstance(codec, MultiTensor) and codec.graph_safe(flat, states)
