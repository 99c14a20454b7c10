"""ResidualFlow and DenseResidualFlow: the published CIFAR-10 structure, checkpoint key mapping, estimators, reports.

The structure facts come from ../shared/docs/CHECKPOINTS.md §2.3 (measured on the reference code): 1642 state-dict
entries and 25,174,233 parameters, of which 5 entries (``geom_p``, ``lamb``, ``last_n_samples``, ``last_firmom``,
``last_secmom``) and 2 parameters per block belong to residual-flows' estimator bookkeeping (52 blocks).
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from scipy import stats
from torch import Tensor

import invertible
from invertible.layers.residual import ResidualBlock
from invertible.layers.residual_logdet import LogDetEstimator
from invertible.models import RESFLOW_CIFAR10, DenseResidualFlow, ResidualFlow

DT = torch.float64


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def cifar_model() -> ResidualFlow:
    torch.manual_seed(0)
    return ResidualFlow(**RESFLOW_CIFAR10)


def test_cifar10_configuration_has_the_published_structure(cifar_model: ResidualFlow) -> None:
    sd = cifar_model.state_dict()
    blocks = sum(1 for _ in cifar_model.residual_blocks())
    assert blocks == 52
    assert len(sd) == 1642 - 5 * blocks
    assert sum(p.numel() for p in cifar_model.parameters()) == 25_174_233 - 2 * blocks
    starts = cifar_model.level_starts
    assert [b - a for a, b in zip(starts, starts[1:])] == [35, 33, 40]  # chain indices 0..34, 0..32, 0..39
    # spectral-norm vectors at their full size, allocated at construction (CHECKPOINTS.md §2.3 table)
    for level, size, first in ((0, 32, 2), (1, 16, 0), (2, 8, 0)):
        c = 3 * 4**level
        prefix = f"layers.{starts[level] + first}.nnet"
        conv_in, conv_out = (0, 4) if level == 0 else (1, 5)  # the very first block has no leading activation
        assert sd[f"{prefix}.{conv_in}.u"].shape == (512 * size * size,)
        assert sd[f"{prefix}.{conv_in}.v"].shape == (3072,)
        assert sd[f"{prefix}.{conv_out}.u"].shape == (3072,) and sd[f"{prefix}.{conv_out}.v"].shape == (512 * size**2,)
        assert sd[f"{prefix}.{conv_in + 2}.u"].shape == (512,)  # the 1x1 convolution
        assert sd[f"{prefix}.{conv_in}.weight"].shape == (512, c, 3, 3)
        assert torch.equal(sd[f"{prefix}.{conv_in}.spatial_dims"], torch.tensor([float(size)] * 2))
    assert sd["layers.4.nnet.0.beta"].shape == (1,)  # later blocks start with LipSwish
    assert sd[f"layers.{starts[2] + 32}.nnet.nnet.1.weight"].shape == (128, 3072)
    assert sd[f"layers.{starts[2] + 39}.fc_module.log_scale"].shape == (3072,)
    assert cifar_model.latent_shape == (48, 8, 8)


def _as_rtqichen(model: ResidualFlow) -> dict[str, Tensor]:
    """Our state dict written with residual-flows' names and types (CHECKPOINTS.md §2.3)."""
    modules = dict(model.named_modules())
    starts = model.level_starts

    def theirs(name: str) -> str:  # layers.{k}.rest -> transforms.{s}.chain.{k - start_s}.rest
        k, rest = re.match(r"^layers\.(\d+)(.*)$", name).groups()  # type: ignore[union-attr]
        level = max(i for i, start in enumerate(starts[:-1]) if start <= int(k))
        return f"transforms.{level}.chain.{int(k) - starts[level]}{rest}"

    out: dict[str, Tensor] = {}
    for key, value in model.state_dict().items():
        owner, _, leaf = key.rpartition(".")
        if isinstance(modules[owner], invertible.ActNorm):
            leaf = {"log_scale": "weight"}.get(leaf, leaf)
            value = value.long() if leaf == "initialized" else value
        out[theirs(f"{owner}.{leaf}")] = value
    for name, _ in model.residual_blocks():
        prefix = theirs(name)
        out[f"{prefix}.geom_p"] = torch.tensor(0.0, dtype=DT)
        out[f"{prefix}.lamb"] = torch.tensor(2.0)
        for extra in ("last_n_samples", "last_firmom", "last_secmom"):
            out[f"{prefix}.{extra}"] = torch.zeros(1)
    return out


def test_full_size_rtqichen_keys_map_one_to_one(cifar_model: ResidualFlow) -> None:
    theirs = _as_rtqichen(cifar_model)
    assert len(theirs) == 1642
    assert set(cifar_model.convert_rtqichen_state_dict(theirs)) == set(cifar_model.state_dict())


def test_a_converted_rtqichen_state_dict_reproduces_the_model_exactly() -> None:
    config = {**RESFLOW_CIFAR10, "blocks": (2, 2, 2), "hidden": 8, "fc_hidden": 8,
              "logdet": LogDetEstimator("series", n_terms=1)}
    source = ResidualFlow(**config, seed=1)
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        source(x)  # data-dependent ActNorm initialisation; u, v of the 3x3 convolutions
        for p in source.parameters():
            p.add_(0.01 * torch.randn_like(p))
        z, _ = source(x)  # refreshes u, v for the perturbed weights
        target = ResidualFlow(**config, seed=2)
        target.load_state_dict(target.convert_rtqichen_state_dict(_as_rtqichen(source)), strict=True)
        z2, _ = target(x)
        x_back, _ = target.inverse(z2)
    assert torch.equal(z2, z)
    assert float((x_back - x).abs().max()) < 1e-3  # float32, default tolerances (atol = rtol = 1e-5)
    assert all(r is not None and r.converged for _, r in target.inverse_reports())


def _small_image_model(logdet: LogDetEstimator | str, size: int = 8) -> tuple[ResidualFlow, Tensor]:
    model = ResidualFlow((3, size, size), blocks=(2, 2), hidden=16, fc_blocks=1, fc_hidden=16, coeff=0.98,
                         logdet=logdet, atol=1e-10, rtol=0.0, seed=0).double()
    x = torch.rand(4, 3, size, size, generator=torch.Generator().manual_seed(3), dtype=DT)
    with torch.no_grad():
        model(x)  # initialise ActNorm
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))  # move the spectral norms to their coefficient
    return model.eval(), x


def test_model_log_likelihood_estimate_is_unbiased() -> None:
    model, x = _small_image_model("exact", size=4)
    with torch.no_grad():
        exact = model.log_prob(x[:1])
        for _, block in model.residual_blocks():
            block.estimator = LogDetEstimator("roulette", dist="poisson")  # 20 exact terms in eval
            block.generator = torch.Generator().manual_seed(4)
        n = 2000
        draws = model.log_prob(x[:1].expand(n, 3, 4, 4))
    z = abs(float(draws.mean() - exact)) / (float(draws.std()) / math.sqrt(n))
    assert z < float(stats.norm.ppf(1 - 1e-4 / 2))
    assert float(draws.std()) > 0  # a genuine estimate, not the exact value


def test_model_inverse_reports_every_block_and_honours_overrides() -> None:
    model, x = _small_image_model("exact")
    with torch.no_grad():
        z, _ = model(x)
        x_back, _ = model.inverse(z)
        reports = model.inverse_reports()
        assert len(reports) == 5 and all(r.converged for _, r in reports)
        assert float((x_back - x).abs().max()) < 1e-8
        with invertible.iterative_inverse(max_iter=3, on_failure="return"):
            model.inverse(z)
        assert all(r.iterations == 3 and not r.converged for _, r in model.inverse_reports())


def test_a_weight_change_behind_autograd_is_noticed_and_update_lipschitz_refreshes_all() -> None:
    model, x = _small_image_model("exact", size=4)
    first = next(m for m in model.modules() if isinstance(m, invertible.SpectralNormLinear))
    with torch.no_grad():
        model(x)  # u, v in step with the weights
    a, b = torch.randn(first.out_features, dtype=DT), torch.randn(first.in_features, dtype=DT)
    a, b = a - (a @ first.u) * first.u, b - (b @ first.v) * first.v  # invisible to the stored u, v
    first.weight.data.add_(100.0 * torch.outer(a, b))  # .data: the version counter does not move
    assert float(first.u @ first.weight.detach() @ first.v) < 2.0 * float(first.scale)  # the stale estimate
    assert first.exact_lipschitz() <= 0.98 * (1 + 1e-6)  # noticed: refreshed on use
    results = model.update_lipschitz(atol=1e-8, rtol=0.0, max_iter=300)
    assert len(results) == 5 * 3 and all(r.iterations >= 1 for r in results)
    assert first.exact_lipschitz() <= 0.98 * (1 + 1e-6)


def test_dense_flow_blocks_and_bounds_compose() -> None:
    flow = DenseResidualFlow(3, blocks=4, hidden=(8, 8), coeff=0.7, actnorm=True)
    blocks = [b for _, b in flow.residual_blocks()]
    assert len(blocks) == 4 and all(isinstance(b, ResidualBlock) for b in blocks)
    lip = 0.7**3
    fwd, inv = flow.lipschitz_bounds()
    actnorms = [m.lipschitz_bounds() for m in flow.layers if isinstance(m, invertible.ActNorm)]
    assert fwd == pytest.approx((1 + lip) ** 4 * math.prod(a.forward for a in actnorms))
    assert inv == pytest.approx((1 / (1 - lip)) ** 4 * math.prod(a.inverse for a in actnorms))
