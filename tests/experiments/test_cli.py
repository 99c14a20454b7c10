"""Shared command-line arguments."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from experiments.common import cli
from experiments.common.cli import add_common_args

COMMON = ["--dataset", "--data-dir", "--download", "--device", "--out", "--resume", "--overwrite", "--seed",
          "--epochs", "--batch-size"]


def _parser(**kwargs) -> argparse.ArgumentParser:
    return add_common_args(argparse.ArgumentParser(prog="study"), **kwargs)


def test_defaults_and_types() -> None:
    args = _parser(epochs=3, batch_size=16, seed=7).parse_args(["--out", "runs/a"])
    assert vars(args) == {"dataset": "digits", "data_dir": Path("data"), "download": False, "device": "auto",
                          "out": Path("runs/a"), "resume": False, "overwrite": False, "seed": 7, "epochs": 3,
                          "batch_size": 16}
    args = _parser().parse_args(["--out", "o", "--dataset", "fashion-mnist", "--data-dir", "/d", "--download",
                                 "--device", "cuda:1", "--resume", "--seed", "0", "--epochs", "2",
                                 "--batch-size", "8"])
    assert (args.dataset, args.data_dir, args.download, args.device, args.resume) == (
        "fashion-mnist", Path("/d"), True, "cuda:1", True)


def test_every_common_argument_has_a_one_sentence_help() -> None:
    parser = _parser()
    actions = {opt: a for a in parser._actions for opt in a.option_strings}
    for option in COMMON:
        text = actions[option].help
        assert text and text[0].isupper() and text.rstrip().endswith((".", ")")), option
        assert text.count(". ") == 0, f"{option}: one sentence, got {text!r}"


@pytest.mark.parametrize(
    "argv",
    [
        [],  # --out is required
        ["--out", "o", "--resume", "--overwrite"],
        ["--out", "o", "--epochs", "0"],
        ["--out", "o", "--batch-size", "-1"],
        ["--out", "o", "--seed", "-3"],
        ["--out", "o", "--dataset", "imagenet"],
    ],
)
def test_bad_arguments_are_rejected(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(argv)
    assert "error:" in capsys.readouterr().err


def test_restricted_datasets_and_default_out() -> None:
    parser = _parser(datasets=["digits", "fashion-mnist"], default_dataset="fashion-mnist", default_out="runs/x")
    args = parser.parse_args([])
    assert args.dataset == "fashion-mnist" and args.out == Path("runs/x")
    with pytest.raises(SystemExit):
        parser.parse_args(["--dataset", "cifar10"])


def test_out_may_be_left_to_the_study() -> None:
    parser = _parser(auto_out="a folder named after the configuration")
    assert parser.parse_args([]).out is None
    assert parser.parse_args(["--out", "o"]).out == Path("o")
    help_text = {opt: a.help for a in parser._actions for opt in a.option_strings}["--out"]
    assert "named after the configuration" in help_text


@pytest.mark.parametrize("kind, good, bad", [
    (cli.positive_int, ["1", "7"], ["0", "-1", "1.5", "ten", ""]),
    (cli.non_negative_int, ["0", "3"], ["-1", "nan"]),
    (cli.seed_int, ["0", str(2**32 - 1)], ["-1", str(2**32)]),
    (cli.positive_float, ["1e-8", "3"], ["0", "-1", "nan", "inf", "-inf", "x"]),
    (cli.non_negative_float, ["0", "0.5"], ["-1e-9", "nan", "inf"]),
    (cli.finite_float, ["-1", "0", "2.5"], ["nan", "inf"]),
    (cli.Range(0, 1, low_open=True, high_open=True), ["0.5", "1e-9"], ["0", "1", "1.5", "-0.1", "nan"]),
])
def test_validated_number_types(kind: cli.Range, good: list[str], bad: list[str]) -> None:
    for text in good:
        assert kind(text) == (int(text) if kind.integer else float(text))
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError, match=re.escape(f"must be {kind.describe()}, got {text!r}")):
            kind(text)


def test_a_bad_number_names_the_flag_and_the_range(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="study")
    parser.add_argument("--coeff", type=cli.Range(0, 1, low_open=True, high_open=True), default=0.8)
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["--coeff", "1.5"])
    assert info.value.code == 2
    assert "argument --coeff: must be a finite number in (0, 1), got '1.5'" in capsys.readouterr().err
