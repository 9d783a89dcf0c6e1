"""Many tensors in one codec call: the multi-tensor path of :meth:`Compressor.roundtrip_many`.

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

from ..kernels.cpu import scratch


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
    """The ord-norms of the tensors, as one float32 vector (float64 accumulation for ord 2)."""
    if ord == 2:
        try:
            return torch.stack(torch._foreach_norm(list(tensors), 2, dtype=torch.float64)).to(torch.float32)
        except (TypeError, RuntimeError):
            return torch.stack([torch.linalg.vector_norm(t, dtype=torch.float64) for t in tensors]).to(torch.float32)
    return torch.stack(torch._foreach_norm(list(tensors), ord)).to(torch.float32)


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
    allows it (:meth:`Compressor.batchable`), else tensor by tensor."""
    tensors = list(tensors)
    if not tensors:
        return [], 0
    if codec.batchable(states) and len({t.device for t in tensors}) == 1:
        _, out, layouts, nbytes = roundtrip_flat(codec, tensors, states=states, generator=generator)
        return unflatten(out, layouts), nbytes
    outs, total = [], 0
    for j, t in enumerate(tensors):
        o, nb = codec.roundtrip(t, state=None if states is None else states[j], generator=generator)
        outs.append(o)
        total += nb
    return outs, total
