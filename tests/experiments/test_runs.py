"""Run folders: config, refusal to overwrite, resume checks, CSV logs rewound to the checkpoint, metrics."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from experiments.common.lock import RunLock
from experiments.common.runs import (
    ConfigMismatch,
    CsvLog,
    OutNotWritable,
    RunExists,
    RunLocked,
    RunNotFound,
    check_folder,
    check_writable,
    open_run,
    read_csv,
    to_jsonable,
    truncate_csv,
)

CONFIG = {"dataset": "digits", "lr": 0.1, "seed": 3, "device": "cpu", "out": "x", "data_dir": Path("data")}


def test_new_run_writes_config_with_versions_and_git(tmp_path: Path) -> None:
    run = open_run(tmp_path / "r", argparse.Namespace(**CONFIG))
    stored = json.loads((tmp_path / "r" / "config.json").read_text())
    assert stored["args"] == {**CONFIG, "data_dir": "data"}
    env = stored["environment"]
    assert env["torch"] == str(torch.__version__) and re.fullmatch(r"\d+\.\d+\.\d+", env["python"])
    assert env["git"] is None or re.fullmatch(r"[0-9a-f]{40}", env["git"]["commit"])
    assert not run.resumed and run.main and stored["command"]


def test_existing_run_is_not_overwritten_unless_asked(tmp_path: Path) -> None:
    run = open_run(tmp_path / "r", CONFIG)
    run.update_metrics(acc=0.5)
    run.close()
    with pytest.raises(RunExists, match=r"already exists; pass --overwrite to replace it, --resume to continue"):
        open_run(tmp_path / "r", CONFIG)
    assert (tmp_path / "r" / "metrics.json").exists()
    open_run(tmp_path / "r", {**CONFIG, "lr": 0.2}, overwrite=True).close()
    assert not (tmp_path / "r" / "metrics.json").exists()
    assert json.loads((tmp_path / "r" / "config.json").read_text())["args"]["lr"] == 0.2


def test_foreign_folder_is_never_deleted(tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "thesis.tex").write_text("precious")
    with pytest.raises(RunExists, match="not a run folder"):
        open_run(tmp_path / "home", CONFIG, overwrite=True)
    assert (tmp_path / "home" / "thesis.tex").read_text() == "precious"
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunExists, match="not a folder"):
        open_run(tmp_path / "file", CONFIG)
    (tmp_path / "empty").mkdir()
    open_run(tmp_path / "empty", CONFIG).close()  # an empty folder is fine
    with pytest.raises(ValueError, match="contradict"):
        open_run(tmp_path / "empty", CONFIG, resume=True, overwrite=True)


def test_resume_checks_config(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(RunNotFound, match="holds no run"):
        open_run(tmp_path / "r", CONFIG, resume=True)
    open_run(tmp_path / "r", CONFIG).close()
    changed = {**CONFIG, "lr": 0.2, "depth": 4}
    del changed["seed"]
    with pytest.raises(ConfigMismatch) as info:
        open_run(tmp_path / "r", changed, resume=True)
    message = str(info.value)
    assert "lr: 0.1 (stored) != 0.2 (now)" in message
    assert "depth: (absent) (stored) != 4 (now)" in message and "seed: 3 (stored) != (absent) (now)" in message
    assert "device" not in message
    with caplog.at_level(logging.WARNING, logger="experiments.common.runs"):
        run = open_run(tmp_path / "r", {**CONFIG, "device": "cuda", "out": "elsewhere"}, resume=True)
    assert run.resumed and "device" in caplog.text
    run.close()
    run = open_run(tmp_path / "r", {**CONFIG, "extra": 1}, resume=True, ignore=["extra"])
    assert run.resume_state is None
    run.close()
    (tmp_path / "r" / "config.json").write_text("{broken")
    with pytest.raises(RunNotFound, match="not valid JSON"):
        open_run(tmp_path / "r", CONFIG, resume=True)


def test_csv_log_flushes_each_row_and_keeps_floats_exact(tmp_path: Path) -> None:
    log = CsvLog(tmp_path / "a.csv", ["step", "loss", "note"])
    values = [0.1 + 0.2, 1e-300, float("inf"), float("nan")]
    for i, v in enumerate(values):
        log.log(step=i, loss=v, note="a,b" if i == 0 else None)
        assert len(read_csv(tmp_path / "a.csv")) == i + 1  # visible before close
    log.log(step=torch.tensor(4), loss=np.float32(0.5))
    rows = read_csv(tmp_path / "a.csv")
    assert [float(r["loss"]) for r in rows[:3]] == values[:3] and math.isnan(float(rows[3]["loss"]))
    assert rows[0]["note"] == "a,b" and rows[1]["note"] == "" and rows[4] == {"step": "4", "loss": "0.5", "note": ""}
    with pytest.raises(KeyError, match="unknown columns"):
        log.log(step=5, acc=1.0)
    log.close()
    reopened = CsvLog(tmp_path / "a.csv", ["step", "loss", "note"])
    assert reopened.rows == 5
    reopened.close()
    with pytest.raises(ValueError, match="has columns"):
        CsvLog(tmp_path / "a.csv", ["step", "acc"])


def test_truncate_csv_drops_a_cut_off_line(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("step,loss\n0,1.0\n1,2.0\n2,3.")
    assert len(read_csv(path)) == 3  # the cut-off row still has two fields
    truncate_csv(path, 2)
    assert path.read_text() == "step,loss\n0,1.0\n1,2.0\n"
    with pytest.raises(ValueError, match="fewer than the 5"):
        truncate_csv(path, 5)


def test_resume_rewinds_logs_and_metrics_to_the_checkpoint(tmp_path: Path) -> None:
    run = open_run(tmp_path / "r", CONFIG)
    steps = run.csv("steps", ["step", "loss"])
    for i in range(5):
        steps.log(step=i, loss=i / 3)
    run.update_metrics(best=1.0)
    run.save_checkpoint(w=torch.arange(3.0))
    for i in range(5, 8):  # logged after the checkpoint: must disappear on resume
        steps.log(step=i, loss=i / 3)
    run.csv("late", ["x"]).log(x=1)
    run.update_metrics(best=2.0, final=3.0)
    (run.checkpoint_dir / ".latest.pt.123.ab.tmp").write_bytes(b"half")  # a save killed midway
    before = (tmp_path / "r" / "steps.csv").read_text().splitlines()[:6]
    run.close()

    resumed = open_run(tmp_path / "r", CONFIG, resume=True)
    assert (tmp_path / "r" / "steps.csv").read_text().splitlines() == before
    assert not (tmp_path / "r" / "late.csv").exists()
    assert json.loads((tmp_path / "r" / "metrics.json").read_text()) == {"best": 1.0} == resumed.metrics
    assert torch.equal(resumed.resume_state["w"], torch.arange(3.0)) and "_run" not in resumed.resume_state
    assert not list(resumed.checkpoint_dir.glob(".*.tmp"))
    log = resumed.csv("steps", ["step", "loss"])
    assert log.rows == 5
    log.log(step=5, loss=5 / 3)
    assert read_csv(tmp_path / "r" / "steps.csv")[-1] == {"step": "5", "loss": repr(5 / 3)}
    resumed.close()


def test_resume_without_checkpoint_starts_logs_afresh(tmp_path: Path) -> None:
    run = open_run(tmp_path / "r", CONFIG)
    run.csv("steps", ["step"]).log(step=0)
    run.update_metrics(x=1)
    run.close()
    resumed = open_run(tmp_path / "r", CONFIG, resume=True)
    assert resumed.resume_state is None and resumed.metrics == {}
    assert not (tmp_path / "r" / "steps.csv").exists() and not (tmp_path / "r" / "metrics.json").exists()
    assert resumed.load_checkpoint() is None


def test_non_main_process_writes_nothing(tmp_path: Path) -> None:
    run = open_run(tmp_path / "r", CONFIG, main=False)
    log = run.csv("steps", ["step"])
    log.log(step=1)
    run.update_metrics(a=1)
    assert run.save_checkpoint(w=torch.zeros(1)) is None
    assert not (tmp_path / "r").exists()
    with pytest.raises(KeyError):
        log.log(bad=1)  # still checks its input


def test_reserved_part_and_metrics_json_is_strict(tmp_path: Path) -> None:
    run = open_run(tmp_path / "r", CONFIG)
    with pytest.raises(ValueError, match="reserved"):
        run.save_checkpoint(_run=1)
    run.update_metrics(loss=float("nan"), kappa=float("inf"), acc=torch.tensor(0.25), n=np.int64(3))
    text = (tmp_path / "r" / "metrics.json").read_text()
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert data == {"loss": "NaN", "kappa": "Infinity", "acc": 0.25, "n": 3}


def test_to_jsonable() -> None:
    assert to_jsonable({"a": (1, np.array([1.5])), "b": Path("x"), "c": torch.float32, "d": -math.inf}) == {
        "a": [1, [1.5]], "b": "x", "c": "torch.float32", "d": "-Infinity"}
    with pytest.raises(TypeError, match="cannot store a object"):
        to_jsonable(object())


def test_a_refused_checkpoint_leaves_the_folder_untouched(tmp_path: Path) -> None:
    run = open_run(tmp_path / "r", CONFIG)
    steps = run.csv("steps", ["step"])
    steps.log(step=0)
    run.save_checkpoint(w=torch.zeros(2))
    steps.log(step=1)
    run.close()
    before = {p.name: p.read_bytes() for p in (tmp_path / "r").rglob("*") if p.is_file()}

    def refuse(parts: dict) -> None:
        assert "w" in parts and "_run" not in parts
        raise ValueError("not this model's checkpoint")

    with pytest.raises(ValueError, match="not this model"):
        open_run(tmp_path / "r", CONFIG, resume=True, check_checkpoint=refuse)
    assert {p.name: p.read_bytes() for p in (tmp_path / "r").rglob("*") if p.is_file()} == before
    accepted = open_run(tmp_path / "r", CONFIG, resume=True, check_checkpoint=lambda parts: None)
    assert accepted.csv("steps", ["step"]).rows == 1
    accepted.close()


# ----------------------------------------------------------------------------------------------------------------
# The lock: one live process per run folder
# ----------------------------------------------------------------------------------------------------------------
def test_a_live_run_folder_cannot_be_overwritten_or_resumed(tmp_path: Path) -> None:
    run = open_run(tmp_path / "r", CONFIG)
    run.update_metrics(acc=0.5)
    assert (tmp_path / "r" / ".lock").is_file()
    before = sorted(p.name for p in (tmp_path / "r").iterdir())
    for mode in ({"overwrite": True}, {"resume": True}):
        with pytest.raises(RunLocked, match=rf"is in use by process {os.getpid()}"):
            open_run(tmp_path / "r", CONFIG, **mode)
        with pytest.raises(RunLocked):
            check_folder(tmp_path / "r", CONFIG, **mode)
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == before  # nothing deleted, nothing cut back
    run.close()
    assert not (tmp_path / "r" / ".lock").exists()
    open_run(tmp_path / "r", CONFIG, resume=True).close()  # free again once the run has closed
    check_folder(tmp_path / "r", CONFIG, overwrite=True)  # negative control: a free folder passes the check


#: A process that opens a run folder, says so, and waits to be killed (it never closes the run).
HOLDER = textwrap.dedent("""
    import sys, time
    from experiments.common.runs import open_run
    run = open_run(sys.argv[1], {"lr": 0.1})
    run.update_metrics(step=1)
    print("open", flush=True)
    time.sleep(600)
""")


def _hold(folder: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "open"
    return proc


def test_a_stale_lock_of_a_killed_run_is_taken_over(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Another process holds the folder: refused while it lives; SIGKILL leaves its lock file behind, and the next
    run takes it over (and says so) instead of being blocked forever."""
    folder = tmp_path / "r"
    proc = _hold(folder)
    try:
        with pytest.raises(RunLocked, match=rf"in use by process {proc.pid}"):
            open_run(folder, {"lr": 0.1}, resume=True)
        with pytest.raises(RunLocked):
            open_run(folder, {"lr": 0.2}, overwrite=True)
        assert json.loads((folder / "metrics.json").read_text()) == {"step": 1}
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert str(proc.pid) in (folder / ".lock").read_text()  # the killed run could not remove its lock
    with caplog.at_level(logging.WARNING, logger="experiments.common.lock"):
        run = open_run(folder, {"lr": 0.1}, resume=True)
    assert f"stale lock of {folder} left by process {proc.pid}" in caplog.text
    assert run.resumed and str(os.getpid()) in (folder / ".lock").read_text()
    run.close()
    assert not (folder / ".lock").exists()


def test_lock_is_exclusive_within_one_process_too(tmp_path: Path) -> None:
    first = RunLock(tmp_path).acquire()
    with pytest.raises(RunLocked):
        RunLock(tmp_path).acquire()
    first.release()
    first.release()  # releasing twice is harmless
    with RunLock(tmp_path) as again:
        assert again.held
    assert not (tmp_path / ".lock").exists()


def test_unwritable_out_is_refused_before_anything_is_created(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutNotWritable, match="lies below the file"):
        check_writable(tmp_path / "file" / "run")
    with pytest.raises(OutNotWritable, match="is a file"):
        check_writable(tmp_path / "file")
    with pytest.raises(OutNotWritable, match="cannot create files"):
        check_writable(Path("/proc/self/run"))
    check_writable(tmp_path / "a" / "b")  # negative control: a new folder below a writable one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
