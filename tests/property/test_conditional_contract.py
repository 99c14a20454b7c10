"""The layer contract for conditional layers and models, over every registered conditional example.

Each example is built with a context per sample (``invertible.testing.catalog.conditional``); the checks hold at
that fixed context: round trips and log-dets against the exact Jacobian in ``x`` in both directions, batch
independence across contexts (sample ``i`` alone with ``context_i``), Lipschitz bounds against measured singular
values, state-dict round trips, ``gradcheck`` (in ``x``, the parameters and the context), float32, empty batches,
and that the output depends on the context. The negative controls below are conditional layers broken in each of
those ways; each must fail the check named.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

import invertible
from invertible import ActNorm, AffineCoupling, MaskedAffineAutoregressive, Permutation, Sequential, SplineCoupling
from invertible.models import DenseFlow, FlowStep
from invertible.testing import ContractError, check_gradients, check_invertible, example_strategy, examples, randomize_
from invertible.testing.registry import example_names, get_example

NAMES = example_names(conditional=True)
EXAMPLES = list(examples(conditional=True))


def test_the_catalogue_has_conditional_examples_and_keeps_them_apart() -> None:
    assert len(NAMES) >= 9 and all(get_example(n).context for n in NAMES)
    assert not set(NAMES) & set(example_names())  # the suites written for (module, x) never meet them
    assert set(example_names(None)) == set(NAMES) | set(example_names())


@pytest.mark.parametrize("name, module, x, context", EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_registered_configuration_passes_every_check(name: str, module: invertible.InvertibleModule, x: Tensor,
                                                     context: Tensor) -> None:
    report = check_invertible(module, x, context=context, name=name)
    assert report.measured["context"] > report.tolerances["context"]  # the context check ran and saw a change


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_round_trips_and_logdets_at_a_fixed_context(name: str, data: st.DataObject) -> None:
    module, x, context = data.draw(example_strategy(name))
    check_invertible(module, x, context=context, name=name,
                     checks=("shapes", "roundtrip_forward", "roundtrip_inverse", "logdet_inverse", "logdet_exact",
                             "logdet_exact_inverse"))


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_samples_are_independent_across_contexts_and_use_them(name: str, data: st.DataObject) -> None:
    module, x, context = data.draw(example_strategy(name))
    check_invertible(module, x, context=context, name=name, checks=("shapes", "batch_independence", "context"))


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_bounds_hold_at_every_drawn_context(name: str, data: st.DataObject) -> None:
    module, x, context = data.draw(example_strategy(name))
    check_invertible(module, x, context=context, name=name, checks=("shapes", "bounds", "state_dict"))


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_gradcheck_in_x_parameters_and_context(name: str, data: st.DataObject) -> None:
    module, x, context = data.draw(example_strategy(name))
    module(x, context)  # data-dependent layers initialise before finite differences perturb the parameters
    check_gradients(module, x[:2], context=context[:2])


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_float32_follows_the_input_dtype(name: str, data: st.DataObject) -> None:
    module, x, context = data.draw(example_strategy(name))
    module, x, context = module.float(), x.float(), context.float()
    report = check_invertible(module, x, context=context, name=name,
                              checks=("shapes", "roundtrip_forward", "logdet_inverse"))
    assert report.dtype == torch.float32


@pytest.mark.parametrize("name, module, x, context", EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_an_empty_batch_with_an_empty_context(name: str, module: invertible.InvertibleModule, x: Tensor,
                                              context: Tensor) -> None:
    module.eval()
    with torch.no_grad():
        y, _ = module(x, context)
        y0, logdet0 = module(x[:0], context[:0])
        x0, logdet_inv0 = module.inverse(y[:0], context[:0])
    assert y0.shape == (0, *y.shape[1:]) and x0.shape == (0, *x.shape[1:]), name
    assert logdet0.shape == (0,) and logdet_inv0.shape == (0,), name


# -- negative controls -------------------------------------------------------------------------------------------
class IgnoresContext(SplineCoupling):
    """Built with a context, but feeds zeros to its network in its place."""

    def _forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return super()._forward(x, torch.zeros_like(context))

    def _inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return super()._inverse(y, torch.zeros_like(context))


class MixesContexts(SplineCoupling):
    """Uses the batch mean of the contexts: every sample's output depends on the other samples' contexts."""

    def _forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return super()._forward(x, context.mean(0, keepdim=True).expand_as(context))

    def _inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return super()._inverse(y, context.mean(0, keepdim=True).expand_as(context))


class InverseAtAnotherContext(SplineCoupling):
    """Inverts at a slightly different context than the forward map uses."""

    def _inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return super()._inverse(y, context + 1e-3)


class ContextOnlyInForward(MaskedAffineAutoregressive):
    """Uses the context in the forward map and forgets it in the inverse (a classic plumbing bug)."""

    def _inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return super()._inverse(y, torch.zeros_like(context))


def _case(cls: type, **kwargs: object) -> tuple[invertible.InvertibleModule, Tensor, Tensor]:
    torch.manual_seed(0)
    module = randomize_(cls(4, hidden=8, context=3, **kwargs), 0.4).double()
    g = torch.Generator().manual_seed(1)
    return module, torch.randn(3, 4, generator=g, dtype=torch.float64), torch.randn(3, 3, generator=g,
                                                                                    dtype=torch.float64)


CONTROLS = [
    ("ignores its context", IgnoresContext, "context"),
    ("mixes the contexts of the batch", MixesContexts, "batch_independence"),
    ("inverts at another context", InverseAtAnotherContext, "roundtrip_forward"),
    ("forgets the context in its inverse", ContextOnlyInForward, "roundtrip_forward"),
]


@pytest.mark.parametrize("label, cls, prop", CONTROLS, ids=[c[0] for c in CONTROLS])
def test_broken_conditional_layer_fails_the_named_check(label: str, cls: type, prop: str) -> None:
    module, x, context = _case(cls)
    with pytest.raises(ContractError, match=prop):
        check_invertible(module, x, context=context)


@pytest.mark.parametrize("cls", [SplineCoupling, MaskedAffineAutoregressive])
def test_the_healthy_parents_of_the_controls_pass(cls: type) -> None:
    module, x, context = _case(cls)
    check_invertible(module, x, context=context)


def test_the_context_check_needs_a_context_to_run() -> None:
    """Without a context the check has nothing to compare: it is skipped, not passed vacuously in its name."""
    module, x, _ = _case(SplineCoupling)
    unconditional = randomize_(SplineCoupling(4, hidden=8), 0.4).double()
    assert "context" not in check_invertible(unconditional, x).measured
    assert "context" in check_invertible(module, x, context=_case(SplineCoupling)[2]).measured


# -- the calls: contexts go where they are used, and bad ones are refused clearly ----------------------------------
def test_a_layer_without_context_refuses_one_and_says_where_it_goes() -> None:
    layer = ActNorm(2, data_init=False)
    with pytest.raises(TypeError, match=r"ActNorm.forward takes no context.*conditional layers"):
        layer(torch.zeros(3, 2), torch.zeros(3, 1))
    with pytest.raises(TypeError, match=r"ActNorm.inverse takes no context"):
        layer.inverse(torch.zeros(3, 2), torch.zeros(3, 1))
    y, _ = layer(torch.zeros(3, 2), None)  # an explicit None is the unconditional call
    assert y.shape == (3, 2)


def test_a_conditional_layer_needs_its_context() -> None:
    layer = SplineCoupling(4, hidden=8, context=3)
    with pytest.raises(TypeError, match=r"SplineCoupling.forward: this layer is conditional \(built with context=3\)"
                                        r".*layer\(x, context\)"):
        layer(torch.zeros(2, 4))


@pytest.mark.parametrize("context, error, message", [
    (torch.zeros(2, 2), ValueError,
     r"DenseFlow.forward expects a context of shape \(batch, 3\) with batch = 2 .*got \(2, 2\)"),
    (torch.zeros(3, 3), ValueError, r"with batch = 2 \(the input's\), got \(3, 3\)"),
    (torch.zeros(2, 3, 5), ValueError, r"got \(2, 3, 5\)"),
    (torch.zeros(2, 3, dtype=torch.float64), TypeError, r"context is torch.float64 .* input is torch.float32"),
    (torch.zeros(2, 3, dtype=torch.long), TypeError, r"must be floating point.*one_hot"),
    ([[0.0] * 3] * 2, TypeError, r"expects the context as a torch.Tensor, got list"),
    (torch.full((2, 3), float("nan")), ValueError, r"context contains 6 NaN"),
])
def test_bad_contexts_are_refused_by_name_and_change_nothing(context: object, error: type, message: str) -> None:
    flow = DenseFlow(4, steps=2, step=FlowStep(hidden=8, coupling="spline", net="mlp", permutation="reverse"),
                     context=3)
    with pytest.raises(error, match=message):
        flow(torch.zeros(2, 4), context)  # type: ignore[arg-type]
    assert not any(bool(m.initialized) for m in flow.modules() if isinstance(m, ActNorm))  # nothing initialised


def test_spatial_contexts_must_match_the_image() -> None:
    layer = AffineCoupling(2, hidden=4, net="conv", context=1)
    layer(torch.zeros(2, 2, 4, 4), torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match=r"\(batch, 1\) or \(batch, 1, 4, 4\)"):
        layer(torch.zeros(2, 2, 4, 4), torch.zeros(2, 1, 2, 2))


def test_sequential_passes_the_context_to_conditional_layers_only() -> None:
    torch.manual_seed(0)
    coupling = randomize_(SplineCoupling(2, hidden=8, context=1), 0.5)
    flow = Sequential(ActNorm(2, data_init=False), coupling, Permutation(2, kind="reverse"))
    x, c = torch.randn(5, 2), torch.randn(5, 1)
    y, logdet = flow(x, c)
    y1, ld1 = coupling(x, c)
    assert torch.equal(y, y1.flip(1)) and torch.equal(logdet, ld1)
    assert flow.context_features == 1
    with pytest.raises(TypeError, match="needs a context"):
        flow(x)


def test_one_sequential_holds_one_context_size() -> None:
    with pytest.raises(ValueError, match=r"different sizes \(layer 0: 1, layer 1: 2\)"):
        Sequential(SplineCoupling(2, context=1), SplineCoupling(2, context=2))
    with pytest.raises(ValueError, match="context must be the number of context features"):
        SplineCoupling(2, context=0)


def test_the_unconditional_call_is_unchanged_by_the_plumbing() -> None:
    """An unconditional layer computes the same map with or without an explicit ``context=None``, and a
    conditional coupling at a context equals an unconditional one whose network gets that context appended."""
    torch.manual_seed(0)
    layer = randomize_(AffineCoupling(4, hidden=8), 0.5)
    x = torch.randn(6, 4)
    assert torch.equal(layer(x)[0], layer(x, None)[0])
    conditional = randomize_(AffineCoupling(4, hidden=8, context=2), 0.5)
    c = torch.randn(6, 2)
    h = conditional.net(torch.cat([x[:, :2], c], dim=1))
    s, t = torch.sigmoid(h[:, 1::2] + 2), h[:, 0::2]
    assert torch.allclose(conditional(x, c)[0], torch.cat([x[:, :2], (x[:, 2:] + t) * s], dim=1), atol=1e-6)


def test_local_bounds_and_memory_saving_refuse_conditional_layers_clearly() -> None:
    layer = SplineCoupling(4, hidden=8, context=2)
    with pytest.raises(NotImplementedError, match="local bounds of a conditional layer.*lipschitz_bounds"):
        layer.local_bounds(torch.zeros(2, 4))
    with pytest.raises(NotImplementedError, match="memory-saving backprop does not pass contexts"):
        layer._relinearize(torch.zeros(2, 4), "forward", True)
    assert all(b is not None for b in layer.lipschitz_bounds())


def test_iaf_is_the_inverse_of_a_conditional_maf() -> None:
    torch.manual_seed(0)
    maf = randomize_(MaskedAffineAutoregressive(3, hidden=8, context=2), 0.3).double()
    iaf = invertible.Inverse(maf)
    x = torch.randn(4, 3, dtype=torch.float64)
    c = torch.randn(4, 2, dtype=torch.float64)
    check_invertible(iaf, x, context=c)
    assert iaf.context_features == 2


def test_the_first_entry_of_a_conditional_made_depends_on_the_context() -> None:
    """Hidden units of degree 0 see the context only and feed every entry; x stays autoregressive."""
    for features in (1, 3):
        made = invertible.MADE(features, 2, hidden=6, context=2, zero_init=False).double()
        x = torch.randn(1, features, dtype=torch.float64)
        jac_c = torch.autograd.functional.jacobian(lambda c: made(x, c), torch.randn(1, 2, dtype=torch.float64))
        assert bool((jac_c.abs().reshape(features, -1).sum(1) > 0).all())
        made.check_masks()
        connectivity = made.connectivity()
        assert not bool(connectivity.diagonal().any()) and bool(torch.equal(connectivity, connectivity.tril()))
