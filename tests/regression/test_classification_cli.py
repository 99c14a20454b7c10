"""The classifier's command line: every flag of the original, per-dataset defaults, the README commands, the
mapping of flags onto the model, and clear errors for impossible requests (no training here: fast)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
import torch

from experiments.classification import STUDY, build_model
from experiments.classification.options import DATASET_DEFAULTS
from experiments.classification.readme_runs import ALL_RUNS, README_RUNS
from invertible import ActNorm, AdditiveCoupling, AffineCoupling, Invertible1x1Conv, Permutation
from invertible.nets import NetActNorm, ZeroConv2d

#: Every flag of the original train_inn_classifier.py (PAPER.md section 2.1), in kebab-case.
ORIGINAL_FLAGS = [
    "--n-epochs", "--dataset", "--batch-size", "--coupling", "--permutation", "--n-levels", "--depth",
    "--hidden-channels", "--use-actnorm", "--use-actnorm-in-blocks", "--an-stable-eps", "--affine-scale-fn",
    "--n-bits-x", "--inj-pad", "--learntop", "--affine-eps", "--lr", "--lr-decay", "--wdecay", "--use-prior",
    "--nf-coeff", "--fd-coeff", "--fd-inv-coeff", "--regularize-every", "--mem-saving", "--zs-dim",
    "--relu-inplace", "--zero-init", "--eval-every", "--save-every", "--checkpoint-every", "--log-every",
    "--plot-csv", "--svd-every", "--save-dir", "--seed", "--no-svd", "--no-inverse-svd",
]
build_parser, parse = STUDY.build_parser, STUDY.parse

#: The flags the issue adds.
NEW_FLAGS = ["--data-dir", "--download", "--epochs", "--device", "--out", "--resume", "--overwrite", "--fd-variant",
             "--lr-decay-epochs", "--dtype", "--threads", "--svd-samples", "--fd-eps", "--crop-padding", "--hflip",
             "--pad-to"]


def _actions() -> dict[str, argparse.Action]:
    return {opt: a for a in build_parser()._actions for opt in a.option_strings}


def test_every_original_flag_exists_with_a_one_sentence_help() -> None:
    actions = _actions()
    missing = [flag for flag in ORIGINAL_FLAGS + NEW_FLAGS if flag not in actions]
    assert not missing, missing
    for flag in ORIGINAL_FLAGS + NEW_FLAGS:
        text = actions[flag].help
        assert text and text[0].isupper() and text.rstrip().endswith((".", ")")), flag
        assert len(re.findall(r"\.\s+[A-Z]", text)) == 0, f"{flag}: one sentence, got {text!r}"


def test_help_runs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--fd-variant" in out and "torch.distributed.run" in out


def test_paper_defaults_on_cifar10_and_small_defaults_on_digits() -> None:
    cifar = parse(["--dataset", "cifar10", "--out", "o"])
    assert (cifar.epochs, cifar.batch_size, cifar.lr, cifar.lr_decay, cifar.lr_decay_epochs) == (
        200, 128, 1e-4, 0.1, [60, 120, 160])
    assert (cifar.n_levels, cifar.depth, cifar.hidden_channels, cifar.coupling, cifar.permutation) == (
        3, 16, 128, "additive", "shuffle")
    assert (cifar.seed, cifar.eval_every, cifar.log_every, cifar.svd_every, cifar.save_every) == (
        3, 2, 400, 2000, 1000)
    assert (cifar.crop_padding, cifar.hflip, cifar.n_bits_x, cifar.nf_coeff, cifar.regularize_every) == (
        4, True, 8.0, -1.0, 1)
    digits = parse(["--out", "o"])
    assert digits.dataset == "digits" and digits.depth == DATASET_DEFAULTS["digits"]["depth"]
    assert (digits.epochs, digits.batch_size, digits.lr, digits.lr_decay_epochs) == (10, 32, 1e-3, [])
    assert parse(["--out", "o", "--epochs", "20", "--lr-decay-epochs", "5", "15"]).lr_decay_epochs == [5, 15]
    assert digits.n_bits_x == pytest.approx(torch.log2(torch.tensor(17.0)).item())
    fashion = parse(["--dataset", "fashion-mnist", "--out", "o", "--epochs", "10", "--no-hflip"])
    assert (fashion.pad_to, fashion.hflip, fashion.lr_decay_epochs) == (32, False, [3, 6, 8])


def test_run_folder_is_named_after_the_configuration() -> None:
    args = parse(["--coupling", "affine", "--permutation", "conv", "--use-actnorm", "--nf-coeff", "1e-5",
                  "--save-dir", "saves/affine_conv"])
    assert args.out == Path("saves/affine_conv/digits_coupling=affine_permutation=conv_use-actnorm_nf-coeff=1e-05")
    assert parse([]).out == Path("runs/classification/digits")
    assert parse(["--lr", "1e-3", "--seed", "3"]).out == parse([]).out  # the defaults, given explicitly
    # the report's paper-optimiser setting differs from the default in lr, batch size and epochs: its own folder
    paper = parse(["--lr", "1e-4", "--batch-size", "128", "--epochs", "30", "--lr-decay-epochs", "9", "18", "24"])
    assert paper.out.name == "digits_epochs=30_batch-size=128_lr=0.0001_lr-decay-epochs=9,18,24"
    assert parse(["--seed", "4"]).out.name == "digits_seed=4"
    assert parse(["--dataset", "cifar10"]).out.name == "cifar10"  # the per-dataset defaults are its defaults
    assert parse(["--quick"]).out.name == "digits_quick"


@pytest.mark.parametrize("name", list(ALL_RUNS))
def test_readme_commands_map_onto_the_model(name: str) -> None:
    flags = ALL_RUNS[name]
    args = parse([*flags, "--out", "o", "--depth", "2", "--hidden-channels", "8"])
    model = build_model(args, (1, 8, 8), 10)
    layers = list(model.flow)
    affine = [m for m in layers if isinstance(m, AffineCoupling)]
    additive = [m for m in layers if isinstance(m, AdditiveCoupling)]
    assert len(affine if "affine" in name else additive) == 3 * 2 and not (affine and additive)
    mixing = Invertible1x1Conv if "conv" in name else Permutation
    assert sum(isinstance(m, mixing) for m in layers) == 6
    # --use-actnorm: one ActNorm per step, except at the 1x1 level of 8x8 images (as in the original)
    assert sum(isinstance(m, ActNorm) for m in layers) == 4
    assert all(isinstance(c.net[-1], ZeroConv2d) for c in affine + additive)  # --zero-init
    assert model.prior and not model.learn_top and model.zs_dim == 64  # --use-prior, all latents to the head
    assert args.no_inverse_svd
    if name in README_RUNS and name.endswith("_fd"):
        assert (args.fd_coeff, args.fd_inv_coeff, args.regularize_every, args.mem_saving) == (1e-4, 1e-4, 10, True)
    if name.endswith("_nf"):
        assert args.nf_coeff == 1e-5


def test_other_model_flags_reach_the_model() -> None:
    args = parse(["--out", "o", "--coupling", "affine", "--depth", "1", "--hidden-channels", "4", "--n-levels", "2",
                  "--use-actnorm-in-blocks", "--affine-eps", "0.01", "--zs-dim", "7", "--inj-pad", "1",
                  "--use-prior", "--learntop", "--an-stable-eps", "1e-3", "--use-actnorm"])
    model = build_model(args, (1, 8, 8), 10)
    coupling = next(m for m in model.flow if isinstance(m, AffineCoupling))
    assert coupling.scale_fn == "sigmoid_eps" and coupling.eps == 0.01
    assert any(isinstance(m, NetActNorm) for m in coupling.net)
    assert next(m for m in model.flow if isinstance(m, ActNorm)).eps == 1e-3
    assert model.zs_dim == 7 and model.head[0].num_features == 7 and model.learn_top
    assert model.flow_input(torch.zeros(2, 1, 8, 8)).shape == (2, 2, 8, 8)  # one injective padding channel
    exp = build_model(parse(["--out", "o", "--coupling", "affine", "--affine-scale-fn", "exp", "--depth", "1",
                             "--hidden-channels", "4"]), (1, 8, 8), 10)
    assert next(m for m in exp.flow if isinstance(m, AffineCoupling)).scale_fn == "exp"


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "imagenet"], "invalid choice"),
    (["--learntop"], "needs --use-prior"),
    (["--affine-eps", "0.1"], "--coupling affine only"),
    (["--fd-coeff", "-1"], "must be a finite number >= 0"),
    (["--fd-coeff", "nan"], "must be a finite number >= 0"),
    (["--wdecay", "-1"], "must be a finite number >= 0"),
    (["--pad-to", "7"], "--pad-to 7 is smaller than the digits images (8x8)"),
    (["--lr", "0"], "must be a finite number > 0"),
    (["--depth", "0"], "must be an integer >= 1"),
    (["--resume", "--overwrite"], "not allowed with"),
])
def test_bad_flags_are_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_impossible_architecture_is_a_clear_error() -> None:
    from experiments.classification import ConfigError

    with pytest.raises(ConfigError, match=r"digits \(1x8x8 images\).*divisible by 16.*at most 3"):
        build_model(parse(["--out", "o", "--n-levels", "4"]), (1, 8, 8), 10)
    with pytest.raises(ConfigError, match="zs_dim must lie in 1..64"):
        build_model(parse(["--out", "o", "--zs-dim", "65"]), (1, 8, 8), 10)
