"""Memory-saving gradients equal standard autograd's over each analytic example's search space (hypothesis).

The fixed configurations are covered in tests/numerical/test_memory_saving.py (float32 and float64); here
hypothesis draws shapes, parameters and input scales. Tolerance: ``100 u kappa`` (see that module).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from invertible.memory import MemorySaving, gradient_discrepancy
from invertible.testing import exact_jacobian, get_example
from invertible.testing import strategies as its

NAMES = [name for name in its.example_names() if get_example(name).analytic]


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=4)
@given(data=st.data())
def test_memory_saving_gradients_match_over_the_search_space(name: str, data: st.DataObject) -> None:
    module, x = data.draw(its.examples(name))
    if module.inverse_kind != "analytic":  # registered as analytic by mistake: MemorySaving refuses it
        return
    module.eval()
    with torch.no_grad():
        y, _ = module(x)
    with torch.enable_grad():
        sv = torch.linalg.svdvals(exact_jacobian(lambda v: module(v)[0], x).detach())
    tol = 100 * torch.finfo(x.dtype).eps * float((sv[:, 0] / sv[:, -1]).max())
    g = torch.Generator().manual_seed(0)
    wx = torch.randn(y.shape, generator=g, dtype=x.dtype)
    wy = torch.randn(x.shape, generator=g, dtype=x.dtype)
    params = [p for p in module.parameters() if p.requires_grad]

    def grads(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        xl, yl = x.clone().requires_grad_(), y.clone().requires_grad_()
        z, logdet = model(xl)
        back, logdet_inv = model.inverse(yl)
        loss = (wx * z).sum() + z.pow(2).sum() + logdet.pow(2).sum() + (wy * back).sum() + logdet_inv.sum()
        got = torch.autograd.grad(loss, [xl, yl, *params], allow_unused=True)
        flat = [(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(got[2:], params)]
        return got[0], got[1], torch.cat(flat) if flat else torch.zeros(0, dtype=x.dtype)

    std, mem = grads(module), grads(MemorySaving(module))
    for what, a, b in zip(("input", "latent", "parameter"), mem, std):
        rel = gradient_discrepancy(a, b)[1]
        assert rel <= tol, f"{name}: {what} gradients differ by {rel:.3g} (tolerance {tol:.3g})"
