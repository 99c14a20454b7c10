"""Issue 13's plan (experiments.plan13): every planned command is a valid command of its study, every run has its
own folder, and the claims the pages will call reproduced have at least three seeds in the plan."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from experiments.common.study import load
from experiments.plan13 import RUNS, SETTINGS, _run_state, _state, main


@pytest.mark.parametrize("key", sorted({f"{r.study}:{' '.join(r.argv)}" for r in RUNS}))
def test_every_planned_command_parses(key: str, tmp_path: Path) -> None:
    run = next(r for r in RUNS if f"{r.study}:{' '.join(r.argv)}" == key)
    for needed in run.after:  # what the run reads at parse time (the flows an attack loads) must exist
        folder = tmp_path / needed
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({"args": {"models": ["affine", "iresnet"]}}))
    command = run.command(tmp_path)
    assert command[:2] == ["-m", f"experiments.{run.study}"] and "{" not in " ".join(command)
    args = load(run.study).parse(command[2:])
    assert args.seed == run.seed and (args.out is None or args.out == run.folder(tmp_path))


def test_runs_have_their_own_folders_and_settings() -> None:
    keys = [r.key for r in RUNS]
    assert len(keys) == len(set(keys))
    for run in RUNS:
        assert f"{run.page}/{run.setting}" in SETTINGS
        assert run.folder("/root").as_posix() == f"/root/{run.page}/{run.setting}/{run.run}/s{run.seed}"
        assert run.command("/root")[-4:] == ["--out", f"/root/{run.key}", "--threads", "1"]


def test_the_reproduced_claims_have_three_seeds() -> None:
    seeds = defaultdict(set)
    for run in RUNS:
        seeds[run.page, run.setting, run.run].add(run.seed)
    for setting, names in (("paper", ("affine_conv", "affine_conv_mem", "affine_conv_nf_scaled",
                                      "affine_conv_fd_scaled", "additive_conv", "affine_shuffle", "affine_conv_nf")),
                           ("fashion", ("affine_conv", "affine_conv_nf_scaled", "additive_conv"))):
        for name in names:
            assert len(seeds["classification", setting, name]) >= 3, (setting, name)
    assert len(seeds["flowgan", "default", "sweep"]) >= 3


def test_state_reads_the_run_folder(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    assert _state(folder) == "new"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert _state(folder) == "partial"
    (folder / "metrics.json").write_text(json.dumps({"status": "completed"}))
    assert _state(folder) == "partial"  # written by the run along the way: not final without the runner's timing
    (folder / "metrics.json").write_text(json.dumps({"status": "diverged: x", "timing": {}}))
    assert _state(folder) == "done"


def test_a_copied_run_is_done_only_when_its_command_wrote_its_file(tmp_path: Path) -> None:
    run = next(r for r in RUNS if r.source is not None)
    assert _run_state(run, tmp_path) == "new"
    run.folder(tmp_path).mkdir(parents=True)
    (run.folder(tmp_path) / "metrics.json").write_text(json.dumps({"status": "completed", "timing": {}}))
    assert _run_state(run, tmp_path) == "copied"  # the source's own metrics do not count
    (run.folder(tmp_path) / run.done_file).write_text("{}")
    assert _run_state(run, tmp_path) == "done"


def test_list_and_dry_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--root", str(tmp_path), "--list", "--only", "classification/paper/affine_conv/"]) == 0
    listed = capsys.readouterr().out
    assert "classification/paper/affine_conv/s1" in listed and "affine_conv_mem" not in listed
    assert main(["--root", str(tmp_path), "--dry-run", "--jobs", "1", "--only", "flowgan/"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed and all("-m experiments.flowgan" in line for line in printed)
    assert not any(tmp_path.iterdir())  # a dry run writes nothing
