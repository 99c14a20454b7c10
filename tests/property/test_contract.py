"""The layer contract, checked by hypothesis for every registered example (invertible.testing registry).

Each test draws a module and an input from the example's search space with ``invertible.testing.strategies``
(shapes, constructor arguments, input scale, random parameters) and runs the matching part of
``check_invertible``; tolerances follow the error model of ``invertible.testing.tolerances`` at the drawn input. A
layer is covered by registering an example; nothing here names a layer. Example counts per property come from the
hypothesis profile (tests/conftest.py: ``ci`` by default, ``thorough`` for hundreds per property).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from invertible import Inverse, InvertibleModule, Sequential
from invertible.testing import check_gradients, check_invertible, examples, get_example
from invertible.testing import strategies as its

NAMES = its.example_names()


@pytest.mark.parametrize("name, module, x", list(examples()), ids=lambda v: v if isinstance(v, str) else "")
def test_registered_configuration_passes_every_check(name: str, module: InvertibleModule, x: torch.Tensor) -> None:
    check_invertible(module, x, name=name)


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_round_trips_in_both_directions(name: str, data: st.DataObject) -> None:
    module, x = data.draw(its.examples(name))
    check_invertible(module, x, name=name, checks=("shapes", "roundtrip_forward", "roundtrip_inverse"))


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_logdets_match_the_exact_jacobian_in_both_directions(name: str, data: st.DataObject) -> None:
    module, x = data.draw(its.examples(name))
    check_invertible(module, x, name=name,
                     checks=("shapes", "logdet_inverse", "logdet_exact", "logdet_exact_inverse"))


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_samples_are_processed_independently(name: str, data: st.DataObject) -> None:
    module, x = data.draw(its.examples(name))
    check_invertible(module, x, name=name, checks=("shapes", "batch_independence"))


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_lipschitz_bounds_are_not_below_measured_singular_values(name: str, data: st.DataObject) -> None:
    module, x = data.draw(its.examples(name))
    check_invertible(module, x, name=name, checks=("shapes", "bounds"))


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_state_dict_round_trip_gives_identical_outputs(name: str, data: st.DataObject) -> None:
    module, x = data.draw(its.examples(name))
    check_invertible(module, x, name=name, checks=("shapes", "state_dict"))


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_composition_adds_logdets(name: str, data: st.DataObject) -> None:
    """``Sequential(f, Inverse(g))`` with two draws ``f``, ``g`` of one example: log-dets add, contract holds."""
    example = get_example(name)
    params = data.draw(its.example_space(name))
    f, x = example.build(**params)
    g, x_g = example.build(**{**params, "seed": params.get("seed", 0) + 1})
    with torch.no_grad():
        f.eval(), g.eval()
        g(x_g)  # data-dependent layers initialise on their own data before g runs backwards
        composed = Sequential(f, Inverse(g))
        z, logdet = composed(x)
        y, logdet_f = f(x)
        _, logdet_g_inv = g.inverse(y)
    torch.testing.assert_close(logdet, logdet_f + logdet_g_inv, rtol=0, atol=1e-9 * (1 + float(logdet.abs().max())))
    # Inverse(g) of an iterative g runs a fixed-point iteration forwards, whose autograd Jacobian (unrolled or
    # implicit) is not the exact one: the composed log-det is compared with slogdet only for analytic inverses
    exact = ("logdet_exact",) if g.inverse_kind == "analytic" else ()
    check_invertible(composed, x, name=f"Sequential({name}, Inverse({name}))",
                     checks=("shapes", "roundtrip_forward", *exact, "logdet_inverse"))


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=max(4, settings.default.max_examples // 2))  # ~5x a round trip's cost per example
@given(data=st.data())
def test_gradcheck_in_float64(name: str, data: st.DataObject) -> None:
    module, x = data.draw(its.examples(name))
    module(x)  # initialise data-dependent layers before parameters are perturbed by finite differences
    check_gradients(module, x[:2])


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_float32_follows_the_input_dtype(name: str, data: st.DataObject) -> None:
    """In float32 every numerical property holds within the float32 error model (dtype included, in "shapes")."""
    module, x = data.draw(its.examples(name))
    module, x = module.float(), x.float()
    report = check_invertible(module, x, name=name, checks=(
        "shapes", "roundtrip_forward", "roundtrip_inverse", "logdet_inverse", "logdet_exact", "logdet_exact_inverse",
        "batch_independence"))
    assert report.dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", NAMES)
def test_cuda_follows_the_input_device(name: str) -> None:
    module, x = get_example(name).build()
    module, x = module.cuda(), x.cuda()
    check_invertible(module, x, name=name, checks=("shapes", "roundtrip_forward", "logdet_inverse"))


def test_every_public_layer_and_model_is_registered() -> None:
    import invertible.models

    public = [getattr(invertible, n) for n in invertible.__all__]
    public += [getattr(invertible.models, n) for n in invertible.models.__all__]
    layers = {c for c in public if isinstance(c, type) and issubclass(c, InvertibleModule)}  # type: ignore[arg-type]
    layers -= {InvertibleModule, Inverse, invertible.models.Flow}  # abstract base, wrapper, base of models
    covered = {get_example(n).layer for n in NAMES}
    missing = sorted(c.__name__ for c in layers - covered)
    assert not missing, f"public layers without a registered example: {missing}"
