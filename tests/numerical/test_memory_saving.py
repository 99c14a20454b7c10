"""Memory-saving backprop (invertible.memory) against standard autograd; its self-check; its memory contract.

Gradients are compared as whole vectors (parameters, and the input separately) by relative error, with the
tolerance ``100 u kappa`` (a normwise worst case; ``check_invertible`` now uses the tighter componentwise model of
``invertible.testing.tolerances`` for round trips): the rebuilt activations carry the round-off of the inverse,
amplified at most by the condition number ``kappa`` of the exact Jacobian at the input.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import Tensor, nn

import invertible
from invertible import AffineCoupling, InvertibleModule, Sequential
from invertible.memory import GradientMismatchError, GradientMismatchWarning, MemorySaving, compare_gradients
from invertible.memory.check import _flat, gradient_discrepancy
from invertible.memory.rebuild import flatten_layers
from invertible.models import DenseFlow, Glow
from invertible.regularizers import fd_direction, forward_fd, inverse_fd, nf_term
from invertible.testing import exact_jacobian, examples, get_example, randomize_

# registered as analytic, and really so (an iterative layer registered without analytic=False is refused by
# MemorySaving, which test_layers_without_analytic_inverse_are_refused covers)
ANALYTIC = [(name, module, x) for name, module, x in examples()
            if get_example(name.split("[")[0]).analytic and module.inverse_kind == "analytic"]
DTYPES = (torch.float64, torch.float32)


def condition_number(module: InvertibleModule, x: Tensor) -> float:
    with torch.enable_grad():
        jac = exact_jacobian(lambda v: module(v)[0], x.double()).detach().double()
    sv = torch.linalg.svdvals(jac)
    return float((sv[:, 0] / sv[:, -1]).max())


def probe_loss(y: Tensor, logdet: Tensor) -> Tensor:
    """A loss that depends on the output (non-linearly) and on the per-sample log-det."""
    g = torch.Generator().manual_seed(1)
    wy = torch.randn(y.shape, generator=g, dtype=torch.float64).to(y.dtype)
    wl = torch.randn(logdet.shape, generator=g, dtype=torch.float64).to(y.dtype)
    return (wy * y).sum() + (wl * logdet).sum() + 0.5 * y.pow(2).sum()


def gradients(model: InvertibleModule, params: list[Tensor], inp: Tensor, direction: str
              ) -> tuple[Tensor, Tensor, str]:
    leaf = inp.detach().clone().requires_grad_(True)
    y, logdet = model(leaf) if direction == "forward" else model.inverse(leaf)
    got = torch.autograd.grad(probe_loss(y, logdet), [leaf, *params], allow_unused=True)
    g_in = got[0] if got[0] is not None else torch.zeros_like(leaf)
    return g_in, _flat(got[1:], params), type(y.grad_fn).__name__


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name, module, x", ANALYTIC, ids=lambda v: v if isinstance(v, str) else "")
def test_gradients_equal_standard_autograd_for_every_analytic_example(
        name: str, module: InvertibleModule, x: Tensor, dtype: torch.dtype) -> None:
    module.eval()
    with torch.no_grad():
        y, _ = module(x)  # data-dependent layers initialise here, before the copies
    kappa = condition_number(module, x)
    module, x, y = module.to(dtype), x.to(dtype), y.to(dtype)
    params = [p for p in module.parameters() if p.requires_grad]
    tol = 100 * torch.finfo(dtype).eps * kappa
    ms = MemorySaving(module)
    for direction, inp in (("forward", x), ("inverse", y)):
        in_std, p_std, _ = gradients(module, params, inp, direction)
        in_mem, p_mem, node = gradients(ms, params, inp, direction)
        assert node == "MemorySavingFunctionBackward", f"{name}: the memory-saving path was not taken"
        assert float(in_std.norm()) > 0 and (not params or float(p_std.norm()) > 0)
        for what, mem, std in (("input", in_mem, in_std), ("parameter", p_mem, p_std)):
            rel = gradient_discrepancy(mem, std)[1]
            assert rel <= tol, f"{name} {direction} {dtype}: {what} gradients differ by {rel:.3g} > {tol:.3g}"


def _glow(dtype: torch.dtype, seed: int = 0) -> tuple[Glow, nn.Module, Tensor, Tensor]:
    torch.manual_seed(seed)
    flow = Glow((3, 8, 8), levels=2, depth=2, hidden=16, split=False, seed=seed)
    head = nn.Linear(3 * 8 * 8, 5)
    x = torch.randn(8, 3, 8, 8) * 1.5 + 0.3
    labels = torch.randint(0, 5, (8,))
    with torch.no_grad():
        flow(x)
    randomize_(flow, 0.05, seed)
    return flow.to(dtype), head.to(dtype), x.to(dtype), labels


def _training_loss(model: InvertibleModule, head: nn.Module, x: Tensor, labels: Tensor) -> Tensor:
    """The classification study's step: cross-entropy on z, the NF term and both finite-difference terms."""
    g = torch.Generator().manual_seed(7)
    z, logdet = model(x)
    loss = nn.functional.cross_entropy(head(z.flatten(1)), labels) + nf_term(z, logdet, 1e-3)
    d = fd_direction(x.double(), generator=g).to(x.dtype)
    d_inv = fd_direction(z.double(), generator=g).to(x.dtype)
    loss = loss + forward_fd(model, x, z=z, coeff=1e-2, direction=d)
    return loss + inverse_fd(model, x, z=z, coeff=1e-2, direction=d_inv)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_classifier_step_with_all_regularizers_fills_the_same_grads(dtype: torch.dtype) -> None:
    flow, head, x, labels = _glow(dtype)
    kappa = condition_number(flow.double(), x.double())
    flow = flow.to(dtype)
    twin, twin_head = copy.deepcopy(flow), copy.deepcopy(head)
    _training_loss(flow, head, x, labels).backward()
    _training_loss(MemorySaving(twin), twin_head, x, labels).backward()
    tol = 100 * torch.finfo(dtype).eps * kappa
    for (name, p), q in zip([*flow.named_parameters(), *head.named_parameters()],
                            [*twin.parameters(), *twin_head.parameters()]):
        assert p.grad is not None and q.grad is not None, name
        err = float((p.grad - q.grad).norm()) / max(float(p.grad.norm()), 1e-30)
        assert err <= tol, f"{name}: {err:.3g} > {tol:.3g}"


def test_adam_training_follows_the_same_trajectory() -> None:
    flow, head, x, labels = _glow(torch.float64)
    twin, twin_head = copy.deepcopy(flow), copy.deepcopy(head)
    ms = MemorySaving(twin)
    opts = [torch.optim.Adam([*flow.parameters(), *head.parameters()], lr=1e-2),
            torch.optim.Adam([*twin.parameters(), *twin_head.parameters()], lr=1e-2)]
    losses: list[list[float]] = [[], []]
    for _ in range(4):
        for k, (model, h) in enumerate(((flow, head), (ms, twin_head))):
            opts[k].zero_grad()
            loss = _training_loss(model, h, x, labels)
            loss.backward()
            opts[k].step()
            losses[k].append(float(loss.detach()))
    assert losses[0][-1] < losses[0][0]  # it trains
    torch.testing.assert_close(torch.tensor(losses[1]), torch.tensor(losses[0]), rtol=1e-9, atol=0)
    for p, q in zip(flow.parameters(), twin.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-9, atol=1e-12)


def _saved_bytes(fn) -> int:  # type: ignore[no-untyped-def]
    total = 0

    def pack(t: Tensor) -> Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def test_no_activations_are_kept_whatever_the_depth() -> None:
    x = torch.randn(4, 3, 8, 8)
    saved = {}
    for depth in (1, 4):
        flow = Glow((3, 8, 8), levels=2, depth=depth, hidden=16, split=False)
        for mode, model in (("standard", flow), ("memory", MemorySaving(flow))):
            saved[mode, depth] = _saved_bytes(lambda model=model: model(x))
    z_bytes = x.numel() * x.element_size()
    assert saved["memory", 1] == saved["memory", 4] == z_bytes  # only the output
    assert saved["standard", 4] > 3 * saved["standard", 1] > 3 * z_bytes  # the control grows with depth


def _ill_conditioned(dtype: torch.dtype, shrink: float = -8.0) -> DenseFlow:
    """Eight affine couplings with scales sigmoid(shrink + 2): each half is squashed four times."""
    torch.manual_seed(0)
    flow = DenseFlow(4, steps=8, hidden=16, coupling="affine", permutation="reverse", actnorm=False,
                     zero_init=False, seed=0)
    with torch.no_grad():
        for layer in flow.modules():
            if isinstance(layer, AffineCoupling):
                layer.net[-1].bias[1::2] = shrink
                layer.net[-1].bias[0::2] = 3.0
    return flow.to(dtype)


def _nll(model: InvertibleModule, x: Tensor) -> Tensor:
    z, logdet = model(x)
    return z.pow(2).sum() - logdet.sum()


def test_self_check_flags_the_exploding_inverse() -> None:
    """The paper's failure (b): with a numerically non-invertible flow the rebuilt activations and the
    memory-saving gradients are wrong; the self-check sees it. The same flow in float64 passes (control)."""
    x = torch.randn(64, 4)
    for dtype, should_agree in ((torch.float64, True), (torch.float32, False)):
        ms = MemorySaving(_ill_conditioned(dtype), on_mismatch="warn")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with ms.checking() as run:
                loss = _nll(ms, x.to(dtype))
            loss.backward()
        assert run is not None and run.result is not None
        result = run.result
        mismatches = [w for w in caught if issubclass(w.category, GradientMismatchWarning)]
        if should_agree:
            assert result.agreed and not mismatches, str(result)
        else:
            assert not result.agreed and result.action == "warned" and mismatches, str(result)
            assert result.angle > 0.3 and result.rel_error > 0.3 and result.reconstruction_error > 0.1
            assert ms.last_check is not None and not ms.last_check.agreed
    healthy = MemorySaving(_ill_conditioned(torch.float32, shrink=0.0))
    with healthy.checking() as run:
        _nll(healthy, x).backward()
    assert run is not None and run.result is not None and run.result.agreed


def test_compare_gradients_measures_the_angle() -> None:
    x = torch.randn(64, 4)
    bad = compare_gradients(_ill_conditioned(torch.float32), lambda m: _nll(m, x))
    good = compare_gradients(_ill_conditioned(torch.float64), lambda m: _nll(m, x.double()))
    assert bad.angle > 0.3 and not bad.agreed
    assert good.angle < 1e-6 and good.agreed


def test_fallback_uses_the_standard_gradients() -> None:
    x = torch.randn(64, 4)
    flow = _ill_conditioned(torch.float32)
    params = list(flow.parameters())
    expected = torch.autograd.grad(_nll(flow, x), params)
    ms = MemorySaving(flow, on_mismatch="fallback")
    with pytest.warns(GradientMismatchWarning, match="using the standard gradients"):
        with ms.checking():
            loss = _nll(ms, x)
        loss.backward()
    assert ms.last_check is not None and ms.last_check.action == "fell back"
    for p, g in zip(params, expected):
        torch.testing.assert_close(p.grad, g, rtol=1e-6, atol=0)


def test_raise_policy_stops_the_backward_pass() -> None:
    ms = MemorySaving(_ill_conditioned(torch.float32), on_mismatch="raise")
    with ms.checking():
        loss = _nll(ms, torch.randn(64, 4))
    with pytest.raises(GradientMismatchError, match="DISAGREE"):
        loss.backward()


def test_nonfinite_gradients_warn_even_without_the_check() -> None:
    ms = MemorySaving(_ill_conditioned(torch.float32, shrink=-15.0))
    loss = _nll(ms, torch.randn(64, 4))
    with pytest.warns(GradientMismatchWarning, match="non-finite"):
        loss.backward()


def test_checking_block_is_off_when_disabled() -> None:
    ms = MemorySaving(_ill_conditioned(torch.float32))
    with ms.checking(enabled=False) as run:
        loss = _nll(ms, torch.randn(8, 4))
    loss.backward()
    assert run is None and ms.last_check is None


def test_nested_containers_are_flattened_and_partial_and_inverse_are_units() -> None:
    gen = torch.Generator().manual_seed(0)
    inner = Sequential(invertible.ActNorm(6, data_init=False), invertible.Permutation(6, generator=gen))
    flow = Sequential(
        inner,
        invertible.Partial(AffineCoupling(4, hidden=8, net="mlp", zero_init=False), 4),
        invertible.Inverse(AffineCoupling(6, hidden=8, net="mlp", zero_init=False, scale_fn="bounded")),
    )
    flow = randomize_(flow, 0.2).double()
    kinds = [type(layer).__name__ for layer in flatten_layers(MemorySaving(flow))]
    assert kinds == ["ActNorm", "Permutation", "Partial", "Inverse"]
    x = torch.randn(5, 6, dtype=torch.float64)
    check = compare_gradients(flow, lambda m: probe_loss(*m(x)) + probe_loss(*m.inverse(x)))
    assert check.agreed and check.rel_error < 1e-12, str(check)


def test_only_logdet_and_frozen_parameters() -> None:
    flow, _, x, _ = _glow(torch.float64)
    frozen = [p for n, p in flow.named_parameters() if "log_scale" in n]
    for p in frozen:
        p.requires_grad_(False)
    check = compare_gradients(flow, lambda m: m(x)[1].pow(2).sum())  # no gradient reaches the output z
    assert check.agreed and check.rel_error < 1e-12 and check.grad_norm > 0
    MemorySaving(flow)(x)[1].sum().backward()
    assert all(p.grad is None for p in frozen)


class _Iterative(invertible.Permutation):
    inverse_kind = "iterative"


def test_layers_without_analytic_inverse_are_refused() -> None:
    flow = Sequential(invertible.ActNorm(3), _Iterative(3))
    with pytest.raises(ValueError, match=r"1:_Iterative invert iteratively"):
        MemorySaving(flow)


def test_a_parameter_changed_before_backward_is_refused() -> None:
    flow, _, x, _ = _glow(torch.float64)
    ms = MemorySaving(flow)
    loss = ms(x)[0].sum()
    with torch.no_grad():
        next(flow.parameters()).add_(1.0)
    with pytest.raises(RuntimeError, match="before optimizer.step"):
        loss.backward()


def test_disabled_and_no_grad_calls_are_plain() -> None:
    flow, _, x, _ = _glow(torch.float64)
    z_ref, ld_ref = flow(x)
    assert type(MemorySaving(flow, enabled=False)(x)[0].grad_fn).__name__ != "MemorySavingFunctionBackward"
    with torch.no_grad():
        z, ld = MemorySaving(flow)(x)
    assert z.grad_fn is None
    torch.testing.assert_close(z, z_ref, rtol=0, atol=0)
    torch.testing.assert_close(ld, ld_ref, rtol=0, atol=0)
