"""Our layers under the peers' own style of test: ``torch.autograd.functional.jacobian`` of one sample's forward
map, then ``log|det J|`` against the returned log-det and the inverse's Jacobian against ``J^-1`` (as zuko and
nflows test their transforms), with a fixed tolerance. It is independent of our checker's Jacobian code
(torch.func) and error model; a layer off by 1e-6 in its log-det fails it (negative control)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from invertible.testing import examples, get_example

DT = torch.float64
ATOL = 1e-7  # float64; worst measured over the 118 cases: 1.7e-12 (log-det), 1.1e-11 (J_inv J - I): 4 orders of margin


def _cases() -> list[tuple[str, object, Tensor]]:
    out = []
    for name, module, x in examples():
        if get_example(name.split("[", 1)[0]).analytic and x[0].numel() <= 64:
            out.append((name, module, x))
    return out


CASES = _cases()


def _peer_style(module, x: Tensor) -> tuple[float, float, float]:  # type: ignore[no-untyped-def]
    """Worst |log|det J| - logdet|, |log|det J_inv| - logdet_inv| and max|J_inv J - I| over the samples."""
    module.eval()
    worst = [0.0, 0.0, 0.0]
    for i in range(min(len(x), 2)):
        xi = x[i : i + 1]
        flat = lambda v, f, like: f(v.reshape(like.shape))[0].reshape(-1)  # noqa: E731
        jac = torch.autograd.functional.jacobian(lambda v: flat(v, module, xi), xi.reshape(-1))
        with torch.no_grad():
            y, logdet = module(xi)
            _, logdet_inv = module.inverse(y)
        jac_inv = torch.autograd.functional.jacobian(lambda v: flat(v, module.inverse, y), y.reshape(-1))
        eye = torch.eye(jac.shape[0], dtype=DT)
        worst[0] = max(worst[0], abs(float(torch.linalg.slogdet(jac)[1] - logdet[0])))
        worst[1] = max(worst[1], abs(float(torch.linalg.slogdet(jac_inv)[1] - logdet_inv[0])))
        worst[2] = max(worst[2], float((jac_inv @ jac - eye).abs().max()))
    return worst[0], worst[1], worst[2]


def test_enough_of_the_registry_is_covered() -> None:
    assert len(CASES) >= 20, [c[0] for c in CASES]


@pytest.mark.parametrize("name,module,x", CASES, ids=[c[0] for c in CASES])
def test_log_det_and_inverse_against_autograd_jacobians(name: str, module, x: Tensor) -> None:  # type: ignore[no-untyped-def]
    ld, ld_inv, inv = _peer_style(module, x)
    assert ld < ATOL and ld_inv < ATOL and inv < ATOL * 10, (name, ld, ld_inv, inv)


def test_negative_control_a_log_det_off_by_1e_6_fails_the_peer_style_test() -> None:
    name, module, x = CASES[0]

    class Off(type(module)):  # type: ignore[misc, valid-type]
        def forward(self, v: Tensor, *args, **kwargs):  # type: ignore[no-untyped-def]
            y, logdet = super().forward(v, *args, **kwargs)
            return y, logdet + 1e-6

    module.__class__ = Off
    ld, ld_inv, inv = _peer_style(module, x)
    assert ld > ATOL and ld_inv < ATOL, (name, ld, ld_inv)
