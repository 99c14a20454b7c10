"""Every study behaves the same way: one protocol (``experiments.common.study``), one runner.

For each study of ``experiments.STUDIES``: ``--help`` explains every flag and states what the default run costs;
every numeric flag has a validated type; a bad flag (or an unwritable ``--out``) is a usage error, exit status 2,
that leaves no folder behind; a ``--quick`` run writes a folder with its config and metrics and releases its lock.
The runner itself is checked on small studies declared here, as a new study would be: exit status 1 for a failed
run, user errors before the folder exists, the lock released when the study raises.
"""

from __future__ import annotations

import argparse
import json
import pkgutil
from pathlib import Path
from typing import Any

import pytest
import torch

import experiments
from experiments.common import cli
from experiments.common.data import DatasetNotFound
from experiments.common.study import Study, load

STUDIES = experiments.STUDIES


pytestmark = pytest.mark.usefixtures("isolated_run")


def test_every_study_package_is_registered_and_declares_a_study() -> None:
    packages = {m.name for m in pkgutil.iter_modules(experiments.__path__) if m.ispkg} - {"common", "reports"}
    assert packages == set(STUDIES)
    for name in STUDIES:
        study = load(name)
        assert study.name == name and "quick" in study.presets
        main = Path(experiments.__path__[0]) / name / "__main__.py"
        assert "STUDY.cli()" in main.read_text(), f"{main} must run the study through the runner"
    with pytest.raises(ValueError, match="declares no STUDY"):  # negative control
        load("common")


def _actions(study: Study) -> list[argparse.Action]:
    return [a for a in study.build_parser()._actions if not isinstance(a, argparse._HelpAction)]


@pytest.mark.parametrize("name", STUDIES)
def test_help_explains_every_flag_and_the_default_runs_cost(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    study = load(name)
    assert study.main(["--help"]) == 0
    text = capsys.readouterr().out
    assert f"Default run: {study.cost}." in " ".join(text.split()) and "minute" in study.cost
    for action in _actions(study):
        assert action.help and action.help.rstrip().endswith((".", ")")), (name, action.option_strings)
        assert action.option_strings[0] in text


def _unvalidated(parser: argparse.ArgumentParser) -> list[str]:
    """Flags that take numbers without one of the validated types of ``experiments.common.cli``."""
    bad = []
    for action in parser._actions:
        if not action.option_strings or action.nargs == 0 or action.choices is not None:
            continue
        values = action.default if isinstance(action.default, list) else [action.default]
        numeric = action.type in (int, float) or any(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                     for v in values)
        if numeric and not (action.type in cli.NUMERIC_TYPES or isinstance(action.type, cli.Range)):
            bad.append(action.option_strings[0])
    return bad


@pytest.mark.parametrize("name", STUDIES)
def test_every_numeric_flag_has_a_validated_type(name: str) -> None:
    study = load(name)
    assert _unvalidated(study.build_parser()) == []
    # and the flags whose default comes from a preset are typed too
    quick = study.presets["quick"]
    for action in _actions(study):
        value = quick.get(action.dest)
        if action.default is None and isinstance(value, (int, float, list)) and not isinstance(value, bool):
            assert action.type in cli.NUMERIC_TYPES or isinstance(action.type, cli.Range), action.dest


def test_the_numeric_flag_check_catches_a_plain_float() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--steps", default=10)
    parser.add_argument("--ok", type=cli.positive_float, default=1.0)
    assert _unvalidated(parser) == ["--lr", "--steps"]


#: Bad command lines per study (besides the runner's own, tried on every study): each must exit with status 2.
BAD_FLAGS: dict[str, list[list[str]]] = {
    "classification": [["--wdecay", "-1"], ["--pad-to", "7"], ["--fd-coeff", "nan"], ["--lr", "-1"],
                       ["--n-levels", "4"], ["--dataset", "svhn", "--data-dir", "nowhere"]],
    "toy_regression": [["--lr", "-1"], ["--points", "1"], ["--nf-coeff", "-1e-6"], ["--grid-extent", "inf"]],
    "flows2d": [["--lr", "-1"], ["--coeff", "1.5"], ["--coeff", "0"], ["--far-radii", "8", "-1"], ["--models", "x"]],
    "attack2d": [["--flows", "nowhere"], ["--radius", "0"], ["--steps", "0"]],
    "glow": [["--affine-eps", "1.5"], ["--lr", "nan"], ["--models", "affine-nonsense"],
             ["--dataset", "cifar10", "--data-dir", "nowhere"]],
    "flowgan": [["--gp-weight", "-1"], ["--variants", "mle0"], ["--actnorm-max-scale", "5"]],
    "ood": [["--n", "0"], ["--sets", "nope"], ["--model", "nowhere"], ["--batch-size", "-4"]],
    "attack": [["--radius-levels", "-1"], ["--images", "0"], ["--model", "nowhere"], ["--step-size", "nan"]],
}
#: Bad command lines every study must refuse the same way.
RUNNER_BAD_FLAGS = [["--seed", "-1"], ["--threads", "-2"], ["--preset", "nonsense"], ["--quick", "--preset", "X"],
                    ["--resume", "--overwrite"], ["--device", "tpu"]]


@pytest.mark.parametrize("name", STUDIES)
def test_bad_flags_are_usage_errors_that_leave_no_folder(name: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    study = load(name)
    other = next(p for p in study.presets if p != "quick")
    required: list[str] = []
    if name == "attack2d":  # a flows2d run folder as far as the flags can tell (its models are loaded later)
        (tmp_path / "flows").mkdir()
        (tmp_path / "flows" / "config.json").write_text(json.dumps({"args": {"models": ["affine"]}}))
        required = ["--flows", str(tmp_path / "flows")]
    cases = [argv if "--flows" in argv else [*argv, *required] for argv in BAD_FLAGS[name]]
    cases += [[*required, *(other if a == "X" else a for a in argv)] for argv in RUNNER_BAD_FLAGS]
    (tmp_path / "file").write_text("in the way")
    cases.append([*required, "--out", str(tmp_path / "file" / "run")])  # an --out that cannot be created
    before = sorted(p.name for p in tmp_path.iterdir())
    for argv in cases:
        code = study.main([*argv, "--save-dir", str(tmp_path / "saved")] if "--out" in argv
                          else [*argv, "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert code == 2 and "error" in err, (name, argv, code, err[-500:])
        assert sorted(p.name for p in tmp_path.iterdir()) == before, (name, argv)
    # negative control: the same call with good flags is not refused at parse time
    assert study.parse([*required, "--out", str(tmp_path / "out")]).out == tmp_path / "out"


#: The quick run of each study, shrunk further where its quick preset takes more than a few seconds (the
#: regression tests run the plain quick presets and pin their outcomes): extra flags after ``--quick``.
QUICK_EXTRAS: dict[str, list[str]] = {
    "classification": [],
    "toy_regression": ["--iterations", "20", "--log-every", "10", "--grid-size", "5", "--nf-coeff", "0"],
    "flows2d": ["--models", "affine", "--iterations", "10", "--log-every", "5", "--grid-size", "6",
                "--far-radii", "8", "--far-points", "4", "--data-points", "50", "--test-size", "100"],
    "attack2d": ["--steps", "3", "--radius", "4"],
    "glow": ["--epochs", "1", "--models", "affine", "--no-analyze"],
    "flowgan": ["--variants", "gan", "--no-analyze", "--classifier-epochs", "1"],
    "ood": ["--sets", "uniform", "digits-test", "--n", "8", "--no-bpd"],
    "attack": ["--images", "2", "--steps", "2"],
}


def test_a_quick_run_of_every_study_leaves_a_complete_unlocked_folder(tmp_path: Path) -> None:
    """One after the other, as a user would: attack2d attacks the flows2d run, ood and attack load the glow run."""
    folders: dict[str, Path] = {}
    for name in STUDIES:
        needs = {"attack2d": ["--flows", str(folders.get("flows2d"))],
                 "ood": ["--model", str(folders.get("glow"))], "attack": ["--model", str(folders.get("glow"))]}
        out = tmp_path / name
        assert load(name).main(["--quick", *QUICK_EXTRAS[name], *needs.get(name, []), "--out", str(out)]) == 0, name
        folders[name] = out
        config = json.loads((out / "config.json").read_text())
        metrics = json.loads((out / "metrics.json").read_text())
        assert config["args"]["preset"] == "quick" and config["args"]["out"] == str(out), name
        assert metrics["status"] == "completed" and metrics["timing"]["resumed"] is False, name
        assert metrics["timing"]["wall_seconds"] > 0 and metrics["timing"]["threads"] >= 1, name
        assert not list(out.rglob(".lock")), f"{name} left a lock behind"
    # a finished folder is refused without --overwrite (before anything is loaded or trained)
    assert load("glow").main(["--quick", *QUICK_EXTRAS["glow"], "--out", str(folders["glow"])]) == 2


# ----------------------------------------------------------------------------------------------------------------
# The runner, on studies declared here
# ----------------------------------------------------------------------------------------------------------------
def _tiny(run_fn: Any, prepare: Any = None, **extra: Any) -> Study:
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--steps", type=cli.positive_int, default=None,
                            help="Steps (default: per preset).")

    return Study(name="tiny", description="A study declared by a test.", add_arguments=add_arguments, run=run_fn,
                 presets={"default": {"steps": 100}, "quick": {"steps": 2}}, prepare=prepare,
                 cost="about a minute", **extra)


def test_a_failed_run_exits_with_1_and_keeps_its_folder(tmp_path: Path) -> None:
    def run(run: Any, args: argparse.Namespace) -> dict[str, Any]:
        run.csv("log", ["step"]).log(step=1)
        return {"status": "diverged: non-finite loss at step 1"}

    study = _tiny(run)
    assert study.main(["--quick", "--out", str(tmp_path / "r")]) == 1
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["status"].startswith("diverged") and (tmp_path / "r" / "log.csv").is_file()
    assert not (tmp_path / "r" / ".lock").exists()
    ok = _tiny(lambda run, args: {"steps_done": args.steps})  # negative control: the same study, completed
    assert ok.main(["--quick", "--out", str(tmp_path / "s")]) == 0
    assert json.loads((tmp_path / "s" / "metrics.json").read_text())["steps_done"] == 2


def test_user_errors_in_prepare_leave_no_folder_and_crashes_release_the_lock(tmp_path: Path,
                                                                             capsys: pytest.CaptureFixture[str]
                                                                             ) -> None:
    def missing(args: argparse.Namespace, device: torch.device) -> None:
        raise DatasetNotFound("data set 'x' not found. How to get it: nowhere")

    assert _tiny(lambda run, args: {}, prepare=missing).main(["--out", str(tmp_path / "a")]) == 2
    assert "data set 'x' not found" in capsys.readouterr().err and not (tmp_path / "a").exists()

    def crash(run: Any, args: argparse.Namespace) -> dict[str, Any]:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _tiny(crash).main(["--out", str(tmp_path / "b")])
    assert (tmp_path / "b" / "config.json").is_file() and not (tmp_path / "b" / ".lock").exists()
    assert _tiny(lambda run, args: {}).main(["--out", str(tmp_path / "b"), "--resume"]) == 0


def test_run_folders_are_named_after_every_flag_that_differs(tmp_path: Path) -> None:
    study = _tiny(lambda run, args: {})
    assert study.parse([]).out == Path("runs/tiny/default")
    assert study.parse(["--steps", "100"]).out == Path("runs/tiny/default")  # the default, given explicitly
    assert study.parse(["--steps", "5", "--seed", "2"]).out == Path("runs/tiny/steps=5_seed=2")
    assert study.parse(["--quick"]).out == Path("runs/tiny/quick")
    assert study.parse(["--quick", "--steps", "100"]).out == Path("runs/tiny/quick_steps=100")
    assert study.parse(["--steps", "5", "--threads", "3", "--device", "cpu"]).out == Path("runs/tiny/steps=5")
    long = study.parse(["--steps", "9" * 120]).out.name
    assert len(long) <= 100 and long != study.parse(["--steps", "8" * 120]).out.name  # cut, then hashed
