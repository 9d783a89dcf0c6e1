"""FactoredDataParallel: ISGQ's data parallelism over n simulated workers (Abdi & Fekri,
"Indirect Stochastic Gradient Quantization and Its Application in Distributed Deep Learning").

A Linear layer's weight gradient over a batch is G = Δᵀ X, with X (rows × m) its inputs and Δ
(rows × n) the back-propagated errors at its outputs; a Conv2d layer's is the same product on
unfolded (im2col) inputs, rows = batch × output positions.  Each worker captures X and Δ of every
such layer with a forward hook and a hook on the layer's output, sends the ISGQ packet of
(X, Δ), and the receiver forms Ĝ = (1/n) Σ_i Q(Δ_i)ᵀ Q(X_i).

Sending the factors pays only when they hold fewer numbers than G, rows·(m + n) < m·n (the
paper's condition B < mn/(m + n)); every other tensor — the gradients of layers where the
condition fails (the output layer, most convolutions), biases, normalization parameters — goes
through the ``dense`` codec (default: QSGD with 2^(b−1) − 1 levels, the same bits per number as
ISGQ's b-bit quantizers), per worker, as in :class:`lowbit.distributed.SimulatedDataParallel`.

In-place activations would overwrite a layer's output before its error is captured, so modules
with an ``inplace`` flag are switched to out-of-place.  ``bits`` counts every packet of every
worker: the quantized factors and their two steps, and the dense packets.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from ..compress import Factored, get_compressor
from .seeding import param_seed, worker_generator
from .simulated import SimulatedCluster


def layer_factors(module: nn.Module, inp: torch.Tensor, grad_out: torch.Tensor) -> Factored:
    """X and Δ of ``module`` with weight gradient Δᵀ X (reshaped to the weight's shape)."""
    if isinstance(module, nn.Linear):
        return Factored(inp.reshape(-1, module.in_features), grad_out.reshape(-1, module.out_features))
    x = F.unfold(inp, module.kernel_size, module.dilation, module.padding, module.stride)  # B × Ckk × L
    return Factored(x.transpose(1, 2).reshape(-1, x.shape[1]),
                    grad_out.flatten(2).transpose(1, 2).reshape(-1, module.out_channels))


def _tappable(m: nn.Module) -> bool:
    if isinstance(m, nn.Linear):
        return True
    return (isinstance(m, nn.Conv2d) and m.groups == 1 and m.padding_mode == "zeros"
            and not isinstance(m.padding, str))


def _rows(m: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    if isinstance(m, nn.Linear):
        return inp.numel() // m.in_features
    return out.shape[0] * out.shape[2] * out.shape[3]


class FactoredDataParallel:
    """Data-parallel training over ``n`` simulated workers with a factored codec (ISGQ).

    Per step: for each worker, run its forward pass inside :meth:`capture`, its backward, then
    :meth:`collect`; after the last worker, :meth:`set_grads` sets every ``p.grad`` to the mean of
    the decoded gradients and returns the bits sent."""

    def __init__(self, model: nn.Module, n: int, codec, *, dense=None, seed: int = 0):
        self.model, self.n = model, n
        self.codec = get_compressor(codec) if isinstance(codec, str) else codec
        if not self.codec.traits.factored:
            raise TypeError(f"FactoredDataParallel needs a factored codec (isgq), got {self.codec.name}")
        levels = 2 ** (getattr(self.codec, "bits", 4) - 1) - 1
        self.dense = dense if dense is not None else get_compressor("qsgd", levels=levels)
        for m in model.modules():
            if hasattr(m, "inplace"):
                m.inplace = False
        self.params = [p for p in model.parameters() if p.requires_grad]
        index = {id(p): j for j, p in enumerate(self.params)}
        self.layers = [m for m in model.modules() if _tappable(m)]
        self._index = index
        self.seed = seed
        self.clusters = {j: SimulatedCluster(n, self.dense, seed=param_seed(seed, j)) for j in range(len(self.params))}
        self.generators: dict[int, list[torch.Generator]] = {}
        self.bits_per_worker = [0] * n
        self.factored_layers: set[int] = set()  # parameter indices of weights sent as factors
        self._capturing = False
        self._inputs, self._deltas = {}, {}
        self._workers: list[tuple[dict, dict]] = []
        self._handles = [m.register_forward_hook(self._forward_hook) for m in self.layers]

    def _forward_hook(self, module, inputs, output):
        if not self._capturing or not torch.is_grad_enabled():
            return
        inp = inputs[0]
        j = self._index[id(module.weight)]
        m, k = module.weight[0].numel(), module.weight.shape[0]
        if _rows(module, inp, output) * (m + k) >= m * k:
            self.factored_layers.discard(j)
            return
        self.factored_layers.add(j)
        self._inputs[module] = inp.detach()
        output.register_hook(lambda g, mod=module: self._deltas.__setitem__(mod, g.detach()))

    @contextlib.contextmanager
    def capture(self):
        """Run one worker's forward pass inside this block."""
        self._inputs, self._deltas = {}, {}
        self._capturing = True
        try:
            yield
        finally:
            self._capturing = False

    def collect(self) -> None:
        """After one worker's backward: keep its factors and its other gradients."""
        factors = {}
        for mod, inp in self._inputs.items():
            if mod not in self._deltas:
                raise RuntimeError("a layer's output error was not captured: call collect() after backward()")
            factors[self._index[id(mod.weight)]] = layer_factors(mod, inp, self._deltas[mod])
        grads = {j: p.grad.detach().clone() for j, p in enumerate(self.params)
                 if p.grad is not None and j not in factors}
        self._workers.append((factors, grads))
        self._inputs, self._deltas = {}, {}

    def _gens(self, j: int, device) -> list[torch.Generator]:
        if j not in self.generators:
            self.generators[j] = [worker_generator(param_seed(self.seed, j), i, device) for i in range(self.n)]
        return self.generators[j]

    @torch.no_grad()
    def set_grads(self) -> dict:
        if len(self._workers) != self.n:
            raise RuntimeError(f"collected {len(self._workers)} workers, expected {self.n}")
        bits = 0
        for j, p in enumerate(self.params):
            if j in self._workers[0][0]:
                gens = self._gens(j, p.device)
                total = torch.zeros(p.shape, dtype=torch.float32, device=p.device)
                for i, (factors, _) in enumerate(self._workers):
                    packet = self.codec.encode(factors[j], generator=gens[i])
                    total += self.codec.decode(packet).reshape(p.shape)
                    bits += 8 * packet.nbytes
                    self.bits_per_worker[i] += 8 * packet.nbytes
                p.grad = (total / self.n).to(p.dtype)
            elif j in self._workers[0][1]:
                _, mean, info = self.clusters[j].reduce(torch.stack([w[1][j] for w in self._workers]))
                p.grad = mean.reshape(p.shape).to(p.dtype)
                bits += info["bits"]
                for i, b in enumerate(info["bits_per_worker"]):
                    self.bits_per_worker[i] += b
        self._workers = []
        return {"bits": bits}

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def state_dict(self) -> dict:
        return {"clusters": {j: c.state_dict() for j, c in self.clusters.items()},
                "generators": {j: [g.get_state() for g in gs] for j, gs in self.generators.items()},
                "bits_per_worker": list(self.bits_per_worker)}

    def load_state_dict(self, sd: dict) -> None:
        for j, s in sd["clusters"].items():
            self.clusters[int(j)].load_state_dict(s)
        for j, states in sd["generators"].items():
            p = self.params[int(j)]
            gens = self._gens(int(j), p.device)
            for g, s in zip(gens, states):
                g.set_state(s)
        self.bits_per_worker = list(sd["bits_per_worker"])
