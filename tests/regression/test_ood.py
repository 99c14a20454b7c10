"""The OOD reconstruction study (``python -m experiments.ood``): its sets, its measurements, its model sources.

- The synthetic sets and the paper's clipping; the real OOD sets read from small files written here in the formats
  the paper's scripts use (SVHN ``*_32x32.mat``, DTD/Places ``.t7`` tensors in the legacy ``torch.save`` format,
  the ODIN ``Imagenet_resize/`` folder); a set that cannot be read is a note, a malformed one a clear error.
- The CLI on synthetic checkpoints of the published structure (y0ast's Glow folder, rtqichen's Residual Flow file,
  built by the loader tests' reference implementations): the bits/dim it reports equal the reference Glow's on the
  same images (the input conversion and the likelihood, end to end); a Glow whose scales underflow is reported as
  100% non-finite instead of crashing.
- The qualitative ordering on small seeded flows of the digits' shape, as measured (torch 2.14 CPU, float32, 100
  images per set): an affine Glow whose coupling networks are 3x their initial scale (a stand-in for training)
  reconstructs every digit, but not one Gaussian-noise and one Rademacher image (NaN/Inf); the additive Glow and
  the Residual Flow scaled alike reconstruct every image of every set (largest errors 2e-4 and 3e-6).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import scipy.io
import torch

import experiments.common.data.sources as sources
from experiments import ood
from experiments.ood.evaluate import evaluate_set, summarize, to_model_space
from experiments.common.data import load_dataset
from experiments.common.image_flows import ImageFlow
from experiments.ood.sets import SYNTHETIC, available_sets, synthetic_unit
from invertible.layers.residual_logdet import LogDetEstimator
from invertible.models import Glow, ResidualFlow

NUMERICAL = Path(__file__).parents[1] / "numerical"
DIGITS = (1, 8, 8)


def loader_test(name: str) -> ModuleType:
    """One of the loader test modules (their reference implementations write the synthetic checkpoints)."""
    key = f"_ood_ref_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, NUMERICAL / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


@pytest.fixture(autouse=True)
def no_system_dirs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only the files written by a test count (installed data sets, e.g. Debian's Fashion-MNIST, stay out)."""
    monkeypatch.setattr(sources, "SYSTEM_DIRS", {})


# --------------------------------------------------------------------------------------------------------------
# Sets
# --------------------------------------------------------------------------------------------------------------
def test_synthetic_sets_and_the_papers_clipping() -> None:
    g = torch.Generator().manual_seed(0)
    sets = {kind: synthetic_unit(kind, 400, (3, 4, 4), g) for kind in SYNTHETIC}
    assert all(v.shape == (400, 3, 4, 4) for v in sets.values())
    gauss = sets["gaussian"]
    assert abs(float(gauss.mean()) - 0.5) < 0.05 and abs(float(gauss.std()) - 1.0) < 0.05
    assert float(sets["uniform"].min()) >= 0.0 and float(sets["uniform"].max()) < 1.0
    assert set(sets["rademacher"].unique().tolist()) == {0.0, 1.0}
    constant = sets["constant"].flatten(1)
    assert bool((constant == constant[:, :1]).all()) and constant[:, 0].unique().numel() == 400
    with pytest.raises(ValueError, match="unknown synthetic kind"):
        synthetic_unit("laplace", 2, (1, 2, 2), g)

    stub = torch.nn.Linear(1, 1)  # from_unit needs no model
    glow = ImageFlow("g", stub, "glow", 256, (1, 2, 2), (1, 2, 2), 256.0, -0.5, None, "test")  # type: ignore[arg-type]
    resflow = ImageFlow("r", stub, "resflow", 256, (1, 2, 2), (1, 2, 2), 255.0, 0.0, None,  # type: ignore[arg-type]
                        "test", clip_rademacher=False)
    values = torch.tensor([-1.0, 0.0, 1.0, 2.0]).double()
    assert glow.from_unit(values, "gaussian").tolist() == pytest.approx([-0.49, -0.49, 0.49, 0.49])
    assert glow.from_unit(values.clamp(0, 1), "rademacher").tolist() == pytest.approx([-0.49, -0.49, 0.49, 0.49])
    assert resflow.from_unit(values.clamp(0, 1), "rademacher").tolist() == [0.0, 0.0, 1.0, 1.0]  # as the paper
    assert resflow.from_unit(values, "uniform").tolist() == pytest.approx([0.01, 0.01, 0.99, 0.99])


def write_ood_files(root: Path) -> dict[str, np.ndarray]:
    """Small files in the paper's formats; returns the uint8 (N, 3, 32, 32) images each holds."""
    rng = np.random.default_rng(0)
    images = {name: rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
              for name, n in (("svhn-test", 5), ("svhn-train", 3), ("dtd", 4), ("places", 3), ("tinyimagenet", 3))}
    (root / "data" / "svhn").mkdir(parents=True)
    for split in ("test", "train"):  # SVHN .mat: X (32, 32, 3, N), y (N, 1) with 10 for the digit 0
        x = images[f"svhn-{split}"]
        scipy.io.savemat(root / "data" / "svhn" / f"{split}_32x32.mat",
                         {"X": x.transpose(2, 3, 1, 0), "y": np.full((len(x), 1), 10, np.uint8)})
    ood_dir = root / "ood"
    ood_dir.mkdir()
    # dtd.t7: a float tensor of 0..255 (the scripts divide by 255); places.t7 holding fractions is accepted too
    torch.save(torch.from_numpy(images["dtd"]).float(), ood_dir / "dtd.t7", _use_new_zipfile_serialization=False)
    torch.save(torch.from_numpy(images["places"]).double() / 255, ood_dir / "places.t7")
    from PIL import Image

    for i, image in enumerate(images["tinyimagenet"]):
        folder = ood_dir / "Imagenet_resize" / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.transpose(1, 2, 0)).save(folder / f"{i}.png")
    return images


def test_real_ood_sets_are_read_from_the_papers_formats(tmp_path: Path) -> None:
    written = write_ood_files(tmp_path)
    sets, notes = available_sets("cifar10", None, n=10, shape=(3, 32, 32), data_dir=tmp_path / "data",
                                 ood_dir=tmp_path / "ood", seed=0)
    by_name = {s.name: s for s in sets}
    assert list(by_name) == [*SYNTHETIC, "svhn-train", "svhn-test", "dtd", "places", "tinyimagenet", "photos"]
    written["tinyimagenet"] = written["tinyimagenet"][[0, 2, 1]]  # file order: class0/0, class0/2, class1/1
    for name, images in written.items():
        assert by_name[name].role == "OOD"
        assert torch.equal(by_name[name].images, torch.from_numpy(images)), name
    assert len(by_name["photos"].images) == 10  # crops of scikit-learn's photos, always there
    assert [n.split(":")[0] for n in notes] == ["cifar10-train", "cifar10-test"]
    assert "not available" in notes[0] and "Looked in" not in notes[0]


def test_unreadable_and_unknown_sets_are_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "ood").mkdir()
    torch.save(torch.zeros(2, 1, 32, 32), tmp_path / "ood" / "dtd.t7")
    common = dict(n=2, shape=(3, 32, 32), data_dir=tmp_path, ood_dir=tmp_path / "ood", seed=0)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\) tensor"):
        available_sets("cifar10", ["dtd"], **common)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown set 'cifar100'"):
        available_sets("cifar10", ["cifar100"], **common)  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="places.t7 not found"):
        available_sets("cifar10", ["places"], **common)  # type: ignore[arg-type]
    out = tmp_path / "out"
    assert ood.main(["--model", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert ood.main(["--dataset", "cifar10", "--data-dir", str(tmp_path), "--zoo-dir", str(tmp_path / "zoo"),
                     "--out", str(tmp_path / "o2")]) == 2
    assert "'cifar10' (train split) not found" in capsys.readouterr().err  # said before any training
    assert not (tmp_path / "zoo").exists()
    assert ood.main(["--n", "ten"]) == 2
    assert "argument --n: must be an integer >= 1, got 'ten'" in capsys.readouterr().err
    assert ood.main(["--sets", "cifar100"]) == 2  # an unknown set is a usage error before anything is loaded
    assert "unknown set 'cifar100'" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------------------
# Loaded checkpoints through the CLI
# --------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A y0ast Glow folder and the same Glow with underflowing scales (32x32, K = 2, L = 3, width 16)."""
    root = tmp_path_factory.mktemp("checkpoints")
    glow_ref = loader_test("test_loader_y0ast_glow")
    model = glow_ref.build_reference()
    model.float().double()  # the file holds float32
    glow = glow_ref.write_checkpoint(model, root / "good")
    broken = glow_ref.build_reference()
    with torch.no_grad():
        for name, p in broken.named_parameters():
            if name.endswith("block.4.conv.bias"):
                p[1::2] = -200.0  # scale = sigmoid(-198) = 0 in float32: x2 * 0 forward, 0 / 0 inverse
    broken_folder = glow_ref.write_checkpoint(broken, root / "broken")
    return {"glow": glow, "glow_model": model, "broken": broken_folder, "glow_ref": glow_ref}


@pytest.fixture(scope="module")
def resflow_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An rtqichen Residual Flow file at 32x32 (2-2-2 blocks of width 8)."""
    res_ref = loader_test("test_loader_resflow")
    resflow = res_ref.build_reference(size=32, idim=8, power_iterations=3)
    return res_ref.write_checkpoint(resflow, tmp_path_factory.mktemp("resflow") / "cifar10_resflow_2-2-2.pth",
                                    args=res_ref.release_args(imagesize=32, idim=8), ema=False)


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # about 30 s of one core: the Residual Flow's log-det estimate at 32x32
def test_the_published_checkpoints_are_evaluated_through_the_loaders(checkpoints: dict[str, object],
                                                                     resflow_file: Path, tmp_path: Path) -> None:
    written = write_ood_files(tmp_path)
    out = tmp_path / "out"
    status = ood.main(["--model", f"glow={checkpoints['glow']}", "--model", f"resflow={resflow_file}",
                       "--dataset", "cifar10", "--data-dir", str(tmp_path / "data"), "--ood-dir", str(tmp_path / "ood"),
                       "--sets", "svhn-test", "dtd", "gaussian", "rademacher", "--n", "4", "--bpd-n", "2",
                       "--out", str(out), "--threads", "1"])
    assert status == 0
    rows = read_rows(out / "results.csv")
    assert [(r["model"], r["set"]) for r in rows] == [(m, s) for m in ("glow", "resflow")
                                                      for s in ("svhn-test", "dtd", "gaussian", "rademacher")]
    for r in rows:
        assert int(r["n"]) == 4 and int(r["bpd_n"]) == 2 and int(r["nonfinite_samples"]) == 0
        assert float(r["recon_max"]) < 1e-3 and math.isfinite(float(r["bpd_mean"]))
    # the study's bits/dim of the Glow on SVHN = the reference Glow's at x = k / 256 - 0.5 with the -D log 256 term
    glow_ref, reference = checkpoints["glow_ref"], checkpoints["glow_model"]
    x = torch.from_numpy(written["svhn-test"][:2]).double() / 256 - 0.5
    with torch.no_grad():
        expected = glow_ref.ref_encode(reference, x, noise=torch.zeros_like(x))[2]  # type: ignore[attr-defined]
    measured = np.load(out / "per_sample" / "glow.npz")["svhn-test/bpd"]
    np.testing.assert_allclose(measured, expected.numpy(), rtol=1e-5)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["models"]["glow"]["source"].startswith("y0ast/Glow-PyTorch")
    assert metrics["models"]["resflow"]["source"].startswith("rtqichen/residual-flows")
    assert (out / "plots" / "recon_glow.png").is_file() and (out / "plots" / "worst_resflow.png").is_file()
    assert "| svhn-test |" in (out / "results.md").read_text()


def test_non_finite_reconstructions_are_counted_and_reported(checkpoints: dict[str, object], tmp_path: Path) -> None:
    out = tmp_path / "out"
    status = ood.main(["--model", f"broken={checkpoints['broken']}", "--dataset", "cifar10", "--sets", "uniform",
                       "constant", "--n", "3", "--out", str(out), "--threads", "1"])
    assert status == 0
    rows = read_rows(out / "results.csv")
    for r in rows:
        assert int(r["nonfinite_samples"]) == 3 and float(r["nonfinite_share"]) == 1.0
        assert int(r["nan_samples"]) + int(r["inf_samples"]) >= 3
        assert r["recon_mean"] == "inf" and int(r["latent_nonfinite_samples"]) == 0  # the inverse fails, not f
        assert r["invertible"] == "0" and r["recon_rel_max"] == "inf"  # the library's verdict on the set
    verdicts = [r["verdict"] for r in json.loads((out / "metrics.json").read_text())["results"]]
    assert all(v["nonfinite"] == 3 and not v["invertible"] and v["at_worst"]["indices"] == [v["worst_index"]]
               for v in verdicts)
    assert "inf (1e+02% non-finite)" in (out / "results.md").read_text()
    assert (out / "plots" / "worst_broken.png").is_file()


# --------------------------------------------------------------------------------------------------------------
# The ordering on small seeded flows
# --------------------------------------------------------------------------------------------------------------
def _init_images() -> torch.Tensor:
    return load_dataset("digits", "train").images[:128].double() / 17 + 0.5 / 17


def seeded_glow(coupling: str, k: float = 3.0, seed: int = 0) -> ImageFlow:
    """A digits-shaped Glow (2 levels of 4 steps, width 16) whose coupling networks are ``k`` times their initial
    weights (as tests/regression/test_attack.py), ActNorm initialised on digits."""
    torch.manual_seed(seed)
    extra = {"order": "realnvp"} if coupling == "affine" else {}
    model = Glow(DIGITS, levels=2, depth=4, hidden=16, coupling=coupling, zero_init=False, learned_prior=False,
                 seed=seed, **extra)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".net." in name and name.endswith("weight"):
                p.mul_(k)
        model((_init_images() - 0.5).float())
    return ImageFlow(f"{coupling} Glow", model.eval(), "glow", 17, DIGITS, DIGITS, 17.0, -0.5, "digits", "seeded")


def seeded_resflow(k: float = 3.0, seed: int = 0) -> ImageFlow:
    torch.manual_seed(seed)
    model = ResidualFlow(DIGITS, blocks=(4, 4), hidden=16, fc_blocks=0, logit=None, seed=seed,
                         logdet=LogDetEstimator(method="series", n_terms=1))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.dim() > 1:
                p.mul_(k)
        model.update_lipschitz()
        model(_init_images().float())
    return ImageFlow("Residual Flow", model.eval(), "resflow", 17, DIGITS, DIGITS, 17.0, 0.0, "digits", "seeded",
                     clip_rademacher=False)


def test_seeded_affine_glow_fails_on_some_noise_where_additive_and_residual_flows_do_not(tmp_path: Path) -> None:
    sets, _ = available_sets("digits", ["digits-test", *SYNTHETIC], n=100, shape=DIGITS, data_dir=tmp_path,
                             ood_dir=tmp_path, seed=0)
    rows = {}
    for flow in (seeded_glow("affine"), seeded_glow("additive"), seeded_resflow()):
        for k, raw in enumerate(sets):
            x = to_model_space(flow, raw, 100, k)
            row = rows[flow.name, raw.name] = summarize(evaluate_set(flow, x, batch_size=100, bpd=False))
            # the largest error relative to the image's norm (what the library's verdict reads): between the largest
            # error over the largest and over the smallest norm; infinite once a reconstruction is not finite
            norms = x.double().flatten(1).norm(dim=1)
            if row["nonfinite_samples"]:
                assert row["relative_max"] == math.inf
            else:
                low, high = row["recon_max"] / float(norms.max()), row["recon_max"] / float(norms.min())
                assert low * (1 - 1e-6) <= row["relative_max"] <= high * (1 + 1e-6), (flow.name, raw.name)  # float32
    affine = {s.name: rows["affine Glow", s.name] for s in sets}
    assert affine["digits-test"]["nonfinite_samples"] == 0
    broken = sum(r["nonfinite_samples"] for r in affine.values())
    assert broken >= 1 and affine["gaussian"]["nonfinite_samples"] + affine["rademacher"]["nonfinite_samples"] >= 1
    assert broken <= 10  # some inputs, not all: the reconstructions of the rest are finite
    for name in ("additive Glow", "Residual Flow"):
        assert all(rows[name, s.name]["nonfinite_samples"] == 0 for s in sets), name
    assert max(rows["Residual Flow", s.name]["recon_max"] for s in sets) < 1e-4
    assert max(rows["additive Glow", s.name]["recon_max"] for s in sets) < 1e-2


# --------------------------------------------------------------------------------------------------------------
# The embedded zoo, end to end (slow: trains three Glows and a Residual Flow)
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.slow  # about 1.5 min of one core
def test_the_quick_zoo_end_to_end_and_its_run_folders(tmp_path: Path) -> None:
    """As measured on the quick zoo (seed 0, 64 images per set): every model reconstructs every set (largest error
    below 1e-5), and every model gives the digits fewer bits/dim than any synthetic or OOD set."""
    zoo, out = tmp_path / "zoo", tmp_path / "ood"
    assert ood.main(["--preset", "quick", "--n", "64", "--zoo-dir", str(zoo), "--out", str(out), "--threads", "1"]) == 0
    rows = read_rows(out / "results.csv")
    models = list(dict.fromkeys(r["model"] for r in rows))
    assert models == ["affine Glow", "additive Glow", "bounded affine Glow", "Residual Flow"]
    for model in models:
        mine = [r for r in rows if r["model"] == model]
        assert all(int(r["nonfinite_samples"]) == 0 and float(r["recon_max"]) < 1e-5 for r in mine), model
        in_dist = max(float(r["bpd_mean"]) for r in mine if r["role"] == "in-distribution")
        assert all(float(r["bpd_mean"]) > in_dist for r in mine if r["role"] != "in-distribution"), model
    # the zoo is reused, and its run folders are model sources of their own
    again = tmp_path / "again"
    assert ood.main(["--model", str(zoo / "glow"), "--model", f"rf={zoo / 'resflow'}", "--sets", "digits-test",
                     "--n", "16", "--no-bpd", "--out", str(again), "--threads", "1"]) == 0
    rerun = {r["model"]: r for r in read_rows(again / "results.csv")}
    assert list(rerun) == [*models[:3], "rf"]
    first = {r["model"]: r for r in rows if r["set"] == "digits-test"}
    assert float(rerun["rf"]["recon_max"]) <= float(first["Residual Flow"]["recon_max"])  # 16 of the same 64
