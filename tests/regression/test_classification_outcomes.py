"""Seeded short runs of the classifier pinned against stored outcomes (measured once on the reference machine, with
tolerances for other BLAS builds): memory-saving gradients follow standard backprop on a well-conditioned flow, and
the regularizers keep the inverse better conditioned in the setting docs/results/classification.md established."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest
import torch

from experiments.classification import main
from experiments.common.runs import read_csv
from experiments.common.training import capture_rng_state, restore_rng_state

AFFINE = ["--coupling", "affine", "--permutation", "conv", "--zero-init", "--use-prior", "--use-actnorm",
          "--threads", "1", "--svd-samples", "1", "--lr-decay-epochs"]


@pytest.fixture(autouse=True)
def leave_global_state_alone() -> Iterator[None]:
    threads, rng = torch.get_num_threads(), capture_rng_state()
    yield
    torch.set_num_threads(threads)
    restore_rng_state(rng)


def _losses(folder: Path) -> list[float]:
    return [float(r["xentropy_loss"]) for r in read_csv(folder / "iteration_log.csv")]


#: Cross-entropy of the first ten iterations (seed 3), measured with standard backprop.
PINNED_LOSSES = [2.485156, 2.386898, 2.320133, 2.229610, 2.173829, 2.035229, 2.066820, 1.985062, 1.940791, 1.836250]


def test_memory_saving_follows_standard_backprop_on_a_well_conditioned_flow(tmp_path: Path) -> None:
    flags = [*AFFINE, "--depth", "2", "--hidden-channels", "16", "--batch-size", "64", "--lr", "1e-3",
             "--epochs", "1", "--log-every", "5", "--svd-every", "100"]
    assert main([*flags, "--out", str(tmp_path / "std")]) == 0
    assert main([*flags, "--mem-saving", "--out", str(tmp_path / "mem")]) == 0
    std, mem = _losses(tmp_path / "std"), _losses(tmp_path / "mem")
    assert len(std) == len(mem) == 23
    # a reproducibility pin of seed 3: under four kernel choices (MKL_CBWR AUTO/COMPATIBLE/AVX2/AVX512, ATen
    # default/avx2/avx512, OpenBLAS Haswell/SkylakeX/Zen) the losses moved by at most 1.3e-6 relative
    assert std[:10] == pytest.approx(PINNED_LOSSES, rel=1e-3)
    # the two modes agree to float32 round-off over the whole epoch (measured over seeds 0-4: 1.1e-7 to 1.7e-6)
    assert mem == pytest.approx(std, rel=1e-5)
    angles = [float(r["grad_angle"]) for r in read_csv(tmp_path / "mem" / "every_N_log.csv") if r["grad_angle"]]
    assert len(angles) == 4 and max(angles) < 1e-4  # measured: about 1e-6 rad
    a = json.loads((tmp_path / "std" / "metrics.json").read_text())
    b = json.loads((tmp_path / "mem" / "metrics.json").read_text())
    # seed 3: 0.7688 under all four kernel choices; seeds 0-4: 0.7549 to 0.7827
    assert a["test_acc"] == b["test_acc"] == pytest.approx(0.7688, abs=0.02)


#: The report's stressed setting (Adam 1e-3, batch 32, no decay), cut to its first 90 iterations.
STRESS = [*AFFINE, "--lr", "1e-3", "--batch-size", "32", "--epochs", "2", "--log-every", "45", "--svd-every", "45",
          "--svd-samples", "8"]
#: The README's NF weight 1e-5 at CIFAR-10's D = 3072, per dimension on the 64-dimensional digits.
NF_SCALED = "4.8e-4"


def test_nf_term_keeps_the_inverse_conditioned_where_the_unregularized_flow_degrades(tmp_path: Path) -> None:
    """What holds over seeds 1-5 (measured on this machine, 90 iterations; the test runs seed 3): kappa at the
    worst-reconstructed image 1.5e3-6.2e5 without the NF term and 25-139 with it (ratio 46-4453); the worst
    training reconstruction error 7.0e-4-1.4e-2 without and 4.4e-5-1.4e-4 with it (ratio 9.2-99); kappa at the
    8 fixed test images 361-6473 without and 29-71 with it (ratio 6.5-108); test accuracy 0.953-0.975 either way;
    at 90 iterations every run is still invertible by the verdict. The bounds below sit a factor 2-3 inside the
    measured spread."""
    assert main([*STRESS, "--out", str(tmp_path / "plain")]) == 0
    assert main([*STRESS, "--nf-coeff", NF_SCALED, "--out", str(tmp_path / "nf")]) == 0
    plain = json.loads((tmp_path / "plain" / "metrics.json").read_text())
    nf = json.loads((tmp_path / "nf" / "metrics.json").read_text())
    assert plain["kappa_at_worst"] > 500 and nf["kappa_at_worst"] < 500
    assert nf["kappa_at_worst"] < plain["kappa_at_worst"] / 15
    assert nf["recons_train_max"] < plain["recons_train_max"] / 3
    assert nf["cond_inverse"] < plain["cond_inverse"] / 2
    assert nf["test_acc"] > 0.93 and plain["test_acc"] > 0.93  # the cure costs no accuracy here
    assert plain["invertible"] and nf["invertible"]  # not yet failed at 90 iterations, on any measured seed
    kappa = [float(r["condition_num"]) for r in read_csv(tmp_path / "plain" / "svd_log.csv")]
    # the unregularized flow's conditioning degrades: kappa at iterations 0, 45, 90 over seeds 1-5 is 5.4-7.3,
    # 29-48, 361-6473 (ratios 4.9-8.2 and 11-135)
    assert len(kappa) == 3 and kappa[1] > 2 * kappa[0] and kappa[2] > 5 * kappa[1]
