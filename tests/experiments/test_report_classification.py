"""The classification report script: which runs it starts, in which order, and what the page says about runs
that are missing or stopped (with a stand-in for the training command, so nothing is trained)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from experiments.reports import classification as report

# A stand-in for ``python -m experiments.classification``: records its arguments; refuses --resume when the run
# folder holds a file named "stale" (as the study does when the stored config differs); else writes metrics.json.
FAKE = """#!/bin/sh
echo "$@" >> "{calls}"
out=""
prev=""
for a in "$@"; do
  if [ "$prev" = "--out" ]; then out="$a"; fi
  prev="$a"
done
case " $* " in
  *" --resume "*) if [ -f "$out/stale" ]; then echo "error: cannot resume $out: these arguments differ"; exit 2; fi;;
esac
mkdir -p "$out"
echo '{{"status": "completed", "test_acc": 0.5, "non_invertible": false, "seconds": 60}}' > "$out/metrics.json"
"""


@pytest.fixture
def fake_python(tmp_path: Path) -> tuple[str, Path]:
    calls = tmp_path / "calls.txt"
    script = tmp_path / "fake_python.sh"
    script.write_text(FAKE.format(calls=calls))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script), calls


def _outs(calls: Path) -> list[str]:
    return [line.split("--out ")[1].split()[0].split("/")[-1] for line in calls.read_text().splitlines()]


def test_only_runs_the_named_runs_in_the_given_order_and_skips_finished_ones(tmp_path, fake_python):
    python, calls = fake_python
    root = tmp_path / "runs"
    done = root / "digits" / "affine_conv"
    done.mkdir(parents=True)
    (done / "metrics.json").write_text("{}")
    times = report.run_all(root, [report.SETTINGS["digits"]], python=python,
                           only=["affine_conv_nf_scaled", "affine_conv", "additive_shuffle"])
    assert _outs(calls) == ["affine_conv_nf_scaled", "additive_shuffle"]
    assert sorted(times) == ["digits/additive_shuffle", "digits/affine_conv_nf_scaled"]
    assert "--nf-coeff 0.00048" in calls.read_text().splitlines()[0]


def test_a_run_that_cannot_be_resumed_is_started_again(tmp_path, fake_python):
    python, calls = fake_python
    root = tmp_path / "runs"
    stale = root / "digits" / "affine_shuffle_fd"
    (stale / "checkpoints").mkdir(parents=True)
    (stale / "checkpoints" / "latest.pt").write_bytes(b"")
    (stale / "stale").write_text("")
    report.run_all(root, [report.SETTINGS["digits"]], python=python, only=["affine_shuffle_fd"])
    lines = calls.read_text().splitlines()
    assert len(lines) == 2 and lines[0].endswith("--resume") and lines[1].endswith("--overwrite")
    assert (stale / "metrics.json").is_file()


def test_the_page_lists_finished_stopped_and_missing_runs(tmp_path):
    root, docs = tmp_path / "runs", tmp_path / "docs"
    setting = report.SETTINGS["paper_lr"]
    finished = {"additive_conv": {"status": "completed", "non_invertible": False, "recons_test_max": 1e-4,
                                  "cond_inverse": 90.0, "test_acc": 0.99, "seconds": 120.0},
                "affine_shuffle": {"status": "diverged: non-finite loss at iteration 7", "non_invertible": True,
                                "recons_test_max": "Infinity", "cond_inverse": "NaN", "test_acc": 0.1,
                                "seconds": 30.0}}
    for name, metrics in finished.items():
        folder = root / setting.name / name
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps(metrics))
        (folder / "every_N_log.csv").write_text("global_iteration,max_recons_error\n0,1e-5\n10,2e-5\n")
    page = report.write_report(root, docs, [setting], None).read_text()
    assert "| affine_conv | – | not run |" in page
    assert "| affine_shuffle (diverged: non-finite loss at iteration 7) | – | 0.100 |" in page
    assert "- Did not complete: `affine_shuffle` (diverged: non-finite loss at iteration 7)." in page
    assert "Numerically non-invertible at the end: `affine_shuffle` (test max inf, κ nan)." in page
    assert "Invertible at the end: `additive_conv` (test max 0.0001, κ 90)." in page
    assert "Not run (no finished run folder): `affine_conv`, `additive_shuffle`." in page
    assert "wall time per run 0–2 min" in page
    assert (docs / "classification" / "paper_lr_conv.png").is_file()
    assert (docs / "classification" / "paper_lr_shuffle.png").is_file()
    assert not (docs / "classification" / "paper_lr_affine_conv_reconstructions.png").exists()  # not run


@pytest.mark.parametrize(("name", "words"), [
    ("affine_conv", "–"), ("affine_conv_nf", "NF 1e-05"),
    ("affine_conv_fd", "FD 0.0001/0.0001 (intended, every 10), mem-saving"),
])
def test_regularizer_says_what_a_readme_run_adds(name, words):
    assert report.regularizer(report.ALL_RUNS[name]) == words
