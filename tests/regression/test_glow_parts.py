"""The Glow study's parts: model names, probe sets, and the measurements of one probe set."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pytest
import torch

from experiments.common.glow.analysis import measure_set
from experiments.common.glow.data import GlowData, load, noise_images, ood_images, requantize
from experiments.common.glow.model import build_glow
from experiments.common.glow.options import model_spec
from experiments.glow import STUDY
from experiments.glow.options import DATASET_DEFAULTS
from invertible import ActNorm, Sequential
from invertible.models import Flow


@pytest.fixture(scope="module")
def digits() -> GlowData:
    return load("digits", data_dir=Path("data"), download=False, levels_of_flow=2, augment=False,
                dtype=torch.float32, device=torch.device("cpu"))


def test_model_names() -> None:
    assert (model_spec("affine").coupling, model_spec("affine").scale_fn) == ("affine", "sigmoid_eps")
    assert model_spec("affine-tanh_exp").scale_fn == "tanh_exp" and model_spec("additive").scale_fn is None
    for bad in ("affine-foo", "mixed", "affine_sigmoid"):
        with pytest.raises(argparse.ArgumentTypeError):
            model_spec(bad)


def test_the_original_affine_scale_is_sigmoid_plus_eps() -> None:
    args = STUDY.parse(["--quick", "--out", "x"])
    model = build_glow(args, (1, 8, 8), "affine")
    couplings = [m for m in model.modules() if type(m).__name__ == "AffineCoupling"]
    assert couplings and all(c.scale_range() == (0.01, 1.01) and c.shift == 2.0 for c in couplings)
    # zero-initialised coupling nets: every affine coupling starts as the scaling sigmoid(2) + 0.01
    x = torch.randn(2, 4, 4, 4)
    assert torch.allclose(couplings[0].scale_shift(x[:, :2])[0], torch.full((2, 2, 4, 4), 0.01 + 1 / (1 + math.e**-2)))
    additive = build_glow(args, (1, 8, 8), "additive")
    assert not any(type(m).__name__ == "AffineCoupling" for m in additive.modules())


def test_presets_cover_every_data_set() -> None:
    from experiments.common.data import dataset_names

    assert set(dataset_names()) == set(DATASET_DEFAULTS)


def test_probe_sets_are_in_the_data_format(digits: GlowData) -> None:
    g = torch.Generator().manual_seed(0)
    gauss = noise_images("gaussian", 500, digits, g)
    rademacher = noise_images("rademacher", 500, digits, g)
    assert gauss.shape == rademacher.shape == (500, 1, 8, 8) and gauss.dtype == torch.uint8
    assert set(rademacher.unique().tolist()) == {0, 16}
    assert int(gauss.max()) == 16 and int(gauss.min()) == 0 and 6 < float(gauss.double().mean()) < 10
    assert requantize(torch.tensor([0, 128, 255], dtype=torch.uint8), 256, 17).tolist() == [0, 8, 16]
    photos, what = ood_images("photos", 5, digits, g, data_dir=Path("data"))
    assert photos.shape == (5, 1, 8, 8) and photos.dtype == torch.uint8 and int(photos.max()) <= 16
    assert "photos" in what
    x = digits.to_model(photos, g)
    assert float(x.min()) >= -0.5 and float(x.max()) < 0.5
    assert ood_images("none", 5, digits, g, data_dir=Path("data")) is None


def test_digits_as_ood_set_for_a_28x28_set(digits: GlowData) -> None:
    # pretend the in-distribution set is 28x28 with 256 levels: digits are resized and re-levelled
    fake_train = type(digits.train)(torch.zeros(2, 1, 28, 28, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64),
                                    "fashion-mnist", "train", 10, 256, "test")
    other = GlowData(fake_train, fake_train, (1, 28, 28), False, torch.float32, torch.device("cpu"))
    images, what = ood_images("digits", 7, other, torch.Generator().manual_seed(0), data_dir=Path("data"))
    assert images.shape == (7, 1, 28, 28) and int(images.max()) > 200 and what.startswith("digits")


def test_measure_set_counts_what_breaks() -> None:
    # an ActNorm whose scale exp(-110) underflows to 0 in float32: the inverse divides by 0
    layer = ActNorm(4, data_init=False)
    with torch.no_grad():
        layer.log_scale.copy_(torch.tensor([-110.0, 0.0, 0.0, 0.0]))
    flow = Flow(Sequential(layer), latent_shape=(4, 1, 1))
    x = torch.full((3, 4, 1, 1), 0.25)
    x[2, 0] = float("nan")
    row = measure_set(flow, x, levels=17, to_levels=lambda t: (t + 0.5) * 17, jacobian_samples=2)
    assert row["input_nonfinite"] == pytest.approx(1 / 3) and row["n"] == 2
    assert row["recon_nonfinite_1"] == 1.0 and row["recon_nonfinite_9"] == 1.0
    assert math.isinf(row["mse_1_max"]) and math.isnan(row["mse_1"])
    # float64 copy: exp(-110) is representable, so the condition number is exact: e^110
    assert row["cond_max"] == pytest.approx(math.exp(110), rel=1e-6)
    healthy = Flow(Sequential(ActNorm(4, data_init=False)), latent_shape=(4, 1, 1))
    good = measure_set(healthy, x[:2], levels=17, to_levels=lambda t: (t + 0.5) * 17, jacobian_samples=2)
    assert good["recon_nonfinite_9"] == 0.0 and good["mse_9_max"] == 0.0 and good["cond_max"] == pytest.approx(1.0)
    assert good["logdet_error_max"] < 1e-5
    # a standard normal density on 4 dims at 0.25 shifted by 17 levels: -log2 N(0.25) per dim + log2(17)
    expected = (0.5 * math.log(2 * math.pi) + 0.5 * 0.25**2) / math.log(2) + math.log2(17)
    assert good["bpd"] == pytest.approx(expected, rel=1e-6)
