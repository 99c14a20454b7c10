"""A layer written outside the package gets the contract checks, local bounds and memory saving without any edit
of the library: the generic hooks serve a layer that implements only its map, and a layer that implements the
optional hooks (``_local_bounds``, ``_relinearize``) is served by its own, with no ``isinstance`` branch for it
anywhere in the library.

- :class:`Householder` implements only the contract (``_forward``, ``_inverse``, ``lipschitz_bounds``);
- :class:`TanhScaleCoupling` is a coupling of its own (``y2 = x2 exp(tanh(W x1))``) with local bounds on the box of
  its inputs and a fused memory-saving rule (its network runs once per rebuild, as the library's couplings do).
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import Tensor, nn

import invertible
from invertible import Bounds, InvertibleModule, MemorySaving
from invertible.base import Relinearized, leaf
from invertible.bounds import block_norm_bound, local_bounds, stability_report
from invertible.diagnostics import singular_values
from invertible.memory import compare_gradients
from invertible.testing import check_gradients, check_invertible, get_example, register

DT = torch.float64
_IDS = itertools.count()


class Householder(InvertibleModule):
    r"""Reflection of the channels, ``y = x - 2 v (v^T x) / ||v||^2``: its own inverse, ``log|det J| = 0``,
    bounds ``(1, 1)``. Implements nothing but the contract."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels=channels, ranks=(2,))
        self.v = nn.Parameter(torch.randn(channels))

    def _reflect(self, x: Tensor) -> Tensor:
        v = self.v
        return x - 2 * (x @ v)[:, None] * v / (v @ v)

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._reflect(x), x.new_zeros(x.shape[0])

    def _inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return self._reflect(y), y.new_zeros(y.shape[0])

    def lipschitz_bounds(self) -> Bounds:
        return Bounds(1.0, 1.0)


class TanhScaleCoupling(InvertibleModule):
    r"""``y1 = x1``, ``y2 = x2 * s`` with ``s = exp(tanh(W x1))`` in ``(1/e, e)``; ``log|det J| = sum tanh(W x1)``.

    No global bound (the off-diagonal block ``x2 s (1 - tanh^2) W`` grows with ``x2``); on a box,
    ``||J|| <= block_norm_bound(e ||W|| max|x2|, e)`` and ``||J^-1|| <= block_norm_bound(e ||W|| max|y2|, e)``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__(channels=channels, ranks=(2,))
        self.k = channels // 2
        self.net = nn.Linear(self.k, channels - self.k, bias=False)
        self.rebuilds = 0

    def _log_scale(self, x1: Tensor) -> Tensor:
        return torch.tanh(self.net(x1))

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x1, x2 = x[:, : self.k], x[:, self.k :]
        log_s = self._log_scale(x1)
        return torch.cat([x1, x2 * torch.exp(log_s)], 1), log_s.sum(1)

    def _inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        y1, y2 = y[:, : self.k], y[:, self.k :]
        log_s = self._log_scale(y1)
        return torch.cat([y1, y2 * torch.exp(-log_s)], 1), -log_s.sum(1)

    def _local_bounds(self, x: Tensor) -> Bounds:
        w = float(torch.linalg.matrix_norm(self.net.weight.detach().double(), ord=2))
        x2 = x[:, self.k :].abs().max()
        y2 = self(x)[0][:, self.k :].abs().max()
        return Bounds(block_norm_bound(math.e * w * float(x2), math.e),
                      block_norm_bound(math.e * w * float(y2), math.e))

    def _relinearize(self, out: Tensor, direction: str, need_input_grad: bool) -> Relinearized:
        self.rebuilds += 1
        a1, a2 = out[:, : self.k], out[:, self.k :]
        c1 = leaf(a1, need_input_grad)
        with torch.enable_grad():
            log_s = self._log_scale(c1)  # the network runs once for the rebuild and the graph
        sign = 1.0 if direction == "forward" else -1.0
        with torch.no_grad():
            other = a2 * torch.exp(-sign * log_s)
        c2 = leaf(other, need_input_grad)
        with torch.enable_grad():
            result = torch.cat([c1, c2 * torch.exp(sign * log_s)], 1)
            logdet = sign * log_s.sum(1)
        return Relinearized(torch.cat([a1, other], 1), (result, logdet), (c1, c2), lambda g: torch.cat(g, 1))


def _flow(seed: int) -> invertible.Sequential:
    torch.manual_seed(seed)
    return invertible.Sequential(
        invertible.ActNorm(4), Householder(4), TanhScaleCoupling(4), invertible.Permutation(4),
        invertible.AffineCoupling(4, hidden=8, net="mlp", zero_init=False, scale_fn="bounded"), TanhScaleCoupling(4),
    ).double()


def _register() -> str:
    name = f"third_party_flow_{next(_IDS)}"

    @register(name, configs=[{"seed": s} for s in range(3)])
    def build(seed: int = 0, batch: int = 5) -> tuple[InvertibleModule, Tensor]:
        flow = _flow(seed)
        x = torch.randn(batch, 4, generator=torch.Generator().manual_seed(seed), dtype=DT) * 2
        return flow, x

    return name


def test_the_registered_layers_pass_the_contract_checks() -> None:
    example = get_example(_register())
    for config in example.configs:
        module, x = example.build(**config)
        report = check_invertible(module, x)
        assert report.ok, report.failures
        check_gradients(module, x)
        for layer in (Householder(3).double(), TanhScaleCoupling(5).double()):
            assert check_invertible(layer, torch.randn(4, layer.channels, dtype=DT)).ok


def test_a_broken_third_party_layer_is_caught() -> None:
    """Negative control: the same checks catch a wrong log-det sign in a layer of one's own."""

    class WrongSign(TanhScaleCoupling):
        def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
            y, logdet = super()._forward(x)
            return y, -logdet

    torch.manual_seed(0)
    layer = WrongSign(4).double()
    with torch.no_grad():
        layer.net.weight.mul_(3)
    report = check_invertible(layer, torch.randn(4, 4, dtype=DT), raise_on_failure=False)
    assert not report.ok and any("logdet" in f or "log-det" in f for f in report.failures)


def test_local_bounds_come_from_the_layers_own_hook_and_hold() -> None:
    flow, x = get_example(_register()).build(seed=1)
    with torch.no_grad():
        flow(x)
    assert flow.lipschitz_bounds() == (None, None)  # no global bound: the couplings have none
    fwd, inv = local_bounds(flow, x)
    assert fwd is not None and inv is not None  # local ones exist, from the third-party hook too
    layer = flow[2]
    own = local_bounds(layer, flow[1](flow[0](x)[0])[0])
    assert own.forward is not None and own.inverse is not None
    sv = singular_values(flow, x)
    assert float(sv[:, 0].max()) <= fwd and float(1 / sv[:, -1].min()) <= inv
    report = stability_report(flow, x)
    assert not report.violations() and report.layers[2].local.forward == pytest.approx(own.forward)
    # negative control: without its hook the layer falls back on its global bounds, which do not exist
    assert InvertibleModule._local_bounds(layer, x) == (None, None)


def test_memory_saving_uses_the_layers_own_rule_and_the_generic_one() -> None:
    flow, x = get_example(_register()).build(seed=2)
    with torch.no_grad():
        flow(x)
    couplings = [flow[2], flow[5]]

    def loss(model: InvertibleModule) -> Tensor:
        z, logdet = model(x)
        back, logdet_inv = model.inverse(z.detach() * 1.1)
        return (z**2).sum() - logdet.sum() + (back**2).sum() + logdet_inv.sum()

    check = compare_gradients(flow, loss)
    assert check.agreed and check.rel_error < 1e-10
    assert all(c.rebuilds == 2 for c in couplings)  # one rebuild per direction, by the layer's own rule
    units = MemorySaving(flow).layers()
    assert [type(u).__name__ for u in units] == [type(m).__name__ for m in flow]


def test_the_fused_coupling_rule_runs_the_network_once_per_rebuild() -> None:
    """The library's couplings rebuild through the same hook: a memory-saving forward and backward evaluate the
    network twice (the forward without a graph, one fused rebuild), against three for the generic rule (inverse,
    then forward with a graph) that a subclass changing the map falls back on."""

    class Changed(invertible.AdditiveCoupling):  # overrides the map: the fused rule must not be used
        def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
            return super()._forward(x)

    counts = {}
    for cls in (invertible.AdditiveCoupling, Changed):
        torch.manual_seed(0)
        layer = cls(4, hidden=8, net="mlp", zero_init=False).double()
        calls = []
        layer.net.register_forward_hook(lambda *_: calls.append(1))
        x = torch.randn(3, 4, dtype=DT, requires_grad=True)
        z, _ = MemorySaving(invertible.Sequential(layer))(x)
        z.sum().backward()
        counts[cls.__name__] = len(calls)
    assert counts == {"AdditiveCoupling": 2, "Changed": 3}
