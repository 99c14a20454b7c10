"""plan13_summary reads finished run folders and counts, per model, the seeds whose verdict is non-invertible, with
the spread; unfinished folders are left out; the page shows the verdict at every evaluation."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from experiments import plan13_summary as summary
from experiments.classification.train import EPOCH_FIELDS

SETTING = "readme60"
RUN = "affine_conv_nf_twin"


def _folder(path: Path, *, invertible: bool, kappas: list[float], nf_coeff: float, nonfinite: int = 0,
            status: str | None = "completed") -> None:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"args": {"nf_coeff": nf_coeff, "fd_coeff": 0.0}}))
    worst = 0.005 if invertible else 0.5
    # as the study writes them: an infinite error as the string "Infinity", the epoch log's non-finite as a share
    worst_text = "Infinity" if nonfinite else worst
    verdict = {"invertible": invertible, "nonfinite": nonfinite, "above_rtol": 0 if invertible else 3,
               "worst_relative": worst_text, "at_worst": {"method": "exact", "kappa_forward": [kappas[-1]]}}
    metrics = {"status": status, "invertible": invertible, "noninvertible_rtol": 0.01, "test_acc": 0.98,
               "kappa_at_worst": kappas[-1], "cond_forward": 10.0, "steps": 60 * len(kappas),
               "first_noninvertible_iteration": -1 if invertible else 60 * len(kappas),
               "verdicts": {"train": verdict, "test": {**verdict, "nonfinite": 0, "worst_relative": worst / 2}}}
    if status is None:
        del metrics["status"]
    (path / "metrics.json").write_text(json.dumps(metrics))
    with open(path / "epoch_log.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, EPOCH_FIELDS, restval="0")
        writer.writeheader()
        for i, kappa in enumerate(kappas, 1):
            last = i == len(kappas)
            writer.writerow({"global_iteration": 60 * i, "kappa_at_worst": kappa,
                             "invertible": int(invertible or not last),
                             "max_relative_train_recons_error": worst if last else 1e-5,
                             "nonfinite_train_recons": nonfinite / 1438 if last else 0})


@pytest.fixture
def root(tmp_path: Path) -> Path:
    base = tmp_path / "classification" / SETTING / RUN
    _folder(base / "s1", invertible=True, kappas=[7.0, 6e5], nf_coeff=1e-5)
    _folder(base / "s1" / "twin", invertible=False, kappas=[7.0, 4.9e6], nf_coeff=-1.0)
    _folder(base / "s2", invertible=True, kappas=[6.0, 3.2e6], nf_coeff=1e-5)
    _folder(base / "s2" / "twin", invertible=False, kappas=[6.0, math.inf], nf_coeff=-1.0, nonfinite=2)
    # negative control: an unfinished seed (no final status) is not counted
    _folder(base / "s3", invertible=False, kappas=[6.0], nf_coeff=1e-5, status=None)
    key = f"classification/{SETTING}/{RUN}"
    (tmp_path / "_launcher.jsonl").write_text("".join(json.dumps(e) + "\n" for e in (
        {"run": f"{key}/s1", "event": "start", "code": str(tmp_path / "_code" / "abc1234")},
        {"run": f"{key}/s1", "event": "end", "rc": 0, "wall_seconds": 440.0},
        {"run": f"{key}/s2", "event": "end", "rc": 1, "wall_seconds": 9.0})))  # a failed launch has no wall time
    return tmp_path


def test_counts_and_spreads_over_the_finished_seeds(root: Path) -> None:
    models = summary.summarize(root, SETTING)["models"]
    regularized, twin = models[RUN], models[f"{RUN}/twin"]
    assert (regularized["n_seeds"], regularized["n_noninvertible"], regularized["n_nonfinite"]) == (2, 0, 0)
    assert (twin["n_seeds"], twin["n_noninvertible"], twin["n_nonfinite"]) == (2, 2, 1)
    assert regularized["regularizer"] == "NF 1e-05" and twin["regularizer"] == "-"
    assert regularized["spread"]["kappa_at_worst"] == {"n": 2, "median": 1.9e6, "min": 6e5, "max": 3.2e6}
    assert twin["spread"]["kappa_at_worst"]["max"] == math.inf
    assert twin["spread"]["worst_relative"] == {"n": 2, "median": math.inf, "min": 0.5, "max": math.inf}
    assert twin["spread"]["first_noninvertible_iteration"]["median"] == 120
    assert regularized["spread"]["first_noninvertible_iteration"]["n"] == 0
    assert regularized["seeds"]["1"]["wall_seconds_of_command"] == 440.0
    assert regularized["seeds"]["2"]["wall_seconds_of_command"] is None
    assert (regularized["seeds"]["1"]["code"], regularized["seeds"]["2"]["code"]) == ("abc1234", None)
    assert "--seed <seed>" in regularized["command"] and "--twin" in regularized["command"]


def test_the_page_marks_the_non_invertible_evaluations(root: Path) -> None:
    page = summary.write_markdown(summary.summarize(root, SETTING))
    assert "| 0 of 2 |" in page and "| 2 of 2 |" in page
    assert "**4.9e+06**" in page and "**inf (nf)**" in page
    assert "**6e+05**" not in page and "| 6e+05 |" in page


def test_bad_input_is_named(root: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown setting 'nope'"):
        summary.summarize(root, "nope")
    with pytest.raises(SystemExit):
        summary.main(["--root", str(tmp_path / "empty"), "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x.md").exists()
    assert summary.main(["--root", str(root), "--out", str(tmp_path / "out" / "page")]) == 0
    assert json.loads((tmp_path / "out" / "page.json").read_text())["models"][RUN]["n_seeds"] == 2
