"""Empty batches, over the whole registry: every layer and model maps a batch of 0 samples to a batch of 0 samples.

Policy (one rule for every layer): an empty batch is a batch, so ``forward`` and ``inverse`` return empty outputs
of the shapes a non-empty batch would have and a log-det of shape ``(0,)``. The one exception is the
data-dependent initialisation of ActNorm, which needs data: a first batch that is empty is refused with a
``ValueError`` that says so (after initialisation, empty batches pass as everywhere else).
"""

from __future__ import annotations

import pytest
import torch

import invertible
from invertible.testing import examples

EXAMPLES = list(examples())


@pytest.mark.parametrize("name,module,x", EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_an_empty_batch_gives_empty_outputs_of_the_right_shape(name: str, module: invertible.InvertibleModule,
                                                                x: torch.Tensor) -> None:
    module.eval()
    with torch.no_grad():
        y, logdet = module(x)  # initialises data-dependent layers on real data
        y0, logdet0 = module(x[:0])
        x0, logdet_inv0 = module.inverse(y[:0])
    assert y0.shape == (0, *y.shape[1:]) and logdet0.shape == (0,), name
    assert x0.shape == (0, *x.shape[1:]) and logdet_inv0.shape == (0,), name
    assert y0.dtype == y.dtype and x0.dtype == x.dtype
    # negative control: the same module still maps the non-empty batch (the empty call changed nothing)
    with torch.no_grad():
        assert torch.equal(module(x)[0], y), name


def test_a_first_empty_batch_cannot_initialise_actnorm_and_says_so() -> None:
    layer = invertible.ActNorm(3)
    with pytest.raises(ValueError, match="initialisation needs data.*empty.*non-empty batch"):
        layer(torch.zeros(0, 3, 4, 4))
    assert not bool(layer.initialized)
    y, logdet = invertible.ActNorm(3, data_init=False)(torch.zeros(0, 3, 4, 4))  # no initialisation: fine
    assert y.shape == (0, 3, 4, 4) and logdet.shape == (0,)


def test_glow_with_an_empty_first_batch_names_the_actnorm_not_a_shape() -> None:
    from invertible.models import Glow

    glow = Glow((1, 8, 8), levels=2, depth=1, hidden=4)
    with pytest.raises(ValueError, match="ActNorm: the data-dependent initialisation needs data"):
        glow(torch.zeros(0, 1, 8, 8))
    glow(torch.randn(4, 1, 8, 8))
    z, logdet = glow(torch.zeros(0, 1, 8, 8))
    assert z.shape == (0, 16, 2, 2) and logdet.shape == (0,)
