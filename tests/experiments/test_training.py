"""Training utilities, and the proof that a killed and resumed run equals an uninterrupted one bit for bit."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Iterator

import numpy as np
import pytest
import torch

from experiments.common import runs
from experiments.common.runs import open_run
from experiments.common.training import (
    DeviceError,
    Meter,
    ResumableLoop,
    capture_rng_state,
    progress,
    resolve_device,
    restore_rng_state,
    seed_everything,
)
from invertible.checkpoint import load_checkpoint

STUDY_PATH = Path(__file__).with_name("tiny_study.py")
STEPS = 4 * 45  # 4 epochs of ceil(1438 / 32) steps


def _load_study() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tiny_study", STUDY_PATH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


study = _load_study()


@pytest.fixture(autouse=True)
def quiet_global_state() -> Iterator[None]:
    """Run with one torch thread (as the study's subprocesses do) and leave threads and RNGs as found."""
    threads, rng = torch.get_num_threads(), capture_rng_state()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    restore_rng_state(rng)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run of the tiny study."""
    out = tmp_path_factory.mktemp("reference") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        study.main(["--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    return out


def assert_same_run(expected: Path, actual: Path) -> None:
    """CSV logs, metrics, final parameters and optimizer state agree bit for bit."""
    assert sorted(p.name for p in actual.rglob("*")) == sorted(p.name for p in expected.rglob("*"))
    for name in ("steps.csv", "epochs.csv", "metrics.json"):
        assert (actual / name).read_text() == (expected / name).read_text(), f"{name} differs"
    a = load_checkpoint(expected / "checkpoints" / "latest.pt")
    b = load_checkpoint(actual / "checkpoints" / "latest.pt")
    assert a["loop"] == b["loop"] == {"epoch": 4, "step": 0, "global": STEPS}
    for key, tensor in a["state"]["model"].items():
        assert torch.equal(tensor, b["state"]["model"][key]), key
    for index, state in a["state"]["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(value, b["state"]["optimizer"]["state"][index][key])


def test_reference_run_is_sane(reference: Path) -> None:
    metrics = json.loads((reference / "metrics.json").read_text())
    assert metrics["steps"] == STEPS and metrics["test_acc"] > 0.8 and metrics["rank_param_spread"] == 0.0
    assert len(runs.read_csv(reference / "steps.csv")) == STEPS
    assert [r["epoch"] for r in runs.read_csv(reference / "epochs.csv")] == ["0", "1", "2", "3"]


@pytest.mark.parametrize(
    "crash",
    [
        ["--crash-at-step", "0"],  # before any checkpoint
        ["--crash-at-step", "19"],  # just before the checkpoint at global step 20
        ["--crash-at-step", "20"],  # just after it
        ["--crash-at-step", "44"],  # last step of epoch 0
        ["--crash-at-step", "133"],
        ["--crash-at-epoch-end", "1"],  # epoch row logged, epoch checkpoint not yet written
        ["--crash-at-epoch-end", "3"],  # the same at the very end
    ],
    ids=lambda c: "".join(c),
)
def test_interrupted_run_resumes_to_identical_results(reference: Path, tmp_path: Path, crash: list[str]) -> None:
    out = str(tmp_path / "run")
    with pytest.raises(study.Crash):
        study.main(["--out", out, "--crash-mode", "raise", *crash])
    study.main(["--out", out, "--resume"])
    assert_same_run(reference, tmp_path / "run")


def test_twice_interrupted_run_and_resuming_a_finished_run(reference: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "run")
    with pytest.raises(study.Crash):
        study.main(["--out", out, "--crash-mode", "raise", "--crash-at-step", "50"])
    with pytest.raises(study.Crash):
        study.main(["--out", out, "--crash-mode", "raise", "--crash-at-step", "101", "--resume"])
    study.main(["--out", out, "--resume"])
    assert_same_run(reference, tmp_path / "run")
    study.main(["--out", out, "--resume"])  # nothing left to do; results stay the same
    assert_same_run(reference, tmp_path / "run")


def test_interrupted_checkpoint_write(reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real_save = torch.save

    def dying_save(obj, handle, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            handle.write(b"PK\x03\x04 partial")
            raise study.Crash()
        return real_save(obj, handle, *args, **kwargs)

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(study.Crash):
        study.main(["--out", str(tmp_path / "run")])
    monkeypatch.undo()
    study.main(["--out", str(tmp_path / "run"), "--resume"])
    assert_same_run(reference, tmp_path / "run")


def test_sigkilled_process_resumes_to_identical_results(reference: Path, tmp_path: Path) -> None:
    """A real SIGKILL at a random step of a separate process (the step is printed on failure)."""
    step = random.randrange(STEPS)
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(STUDY_PATH), "--out", str(out), "--crash-at-step", str(step)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, f"step {step}: {proc.stderr[-2000:]}"
    assert len(runs.read_csv(out / "steps.csv")) == step  # it really died at that step
    study.main(["--out", str(out), "--resume"])
    try:
        assert_same_run(reference, out)
    except AssertionError as exc:
        raise AssertionError(f"killed at step {step}: {exc}") from exc


def test_resume_refuses_changed_arguments(reference: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "run")
    with pytest.raises(study.Crash):
        study.main(["--out", out, "--crash-mode", "raise", "--crash-at-step", "3"])
    with pytest.raises(runs.ConfigMismatch, match=r"lr: 0.01 \(stored\) != 0.02 \(now\)"):
        study.main(["--out", out, "--resume", "--lr", "0.02"])


# ----------------------------------------------------------------------------------------------------------------
def test_seed_everything_and_rng_capture() -> None:
    seed_everything(5)
    first = (random.random(), np.random.rand(), torch.rand(2).tolist())
    seed_everything(5)
    state = capture_rng_state()
    assert (random.random(), np.random.rand(), torch.rand(2).tolist()) == first
    restore_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(2).tolist()) == first


def test_resolve_device(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(DeviceError, match=r"--device cuda was requested but no CUDA device is available.*--device cpu"):
        resolve_device("cuda")
    with pytest.raises(DeviceError, match="use auto, cpu, cuda or cuda:N"):
        resolve_device("gpu")
    with pytest.raises(DeviceError, match="unsupported device"):
        resolve_device("meta")


def test_progress_bar_only_on_a_terminal_of_rank_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert progress(range(3)).disable
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    bar = progress(range(3), file=open(os.devnull, "w"))
    assert not bar.disable and list(bar) == [0, 1, 2]
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert progress(range(3)).disable
    assert not progress(range(3), enabled=True, file=open(os.devnull, "w")).disable


def test_meter_state_round_trip() -> None:
    meter = Meter()
    meter.add(count=2, loss=3.0, acc=1)
    meter.add(count=2, loss=1.0, acc=2)
    assert meter.means() == {"loss": 1.0, "acc": 0.75}
    other = Meter()
    other.load_state_dict(meter.state_dict())
    assert other.means() == meter.means()
    meter.reset()
    assert meter.means() == {}


def test_loop_without_data_and_misuse(tmp_path: Path) -> None:
    run = open_run(tmp_path / "r", {"seed": 0})
    loop = ResumableLoop(run, epochs=2, seed=0, steps_per_epoch=3, progress_bar=False)
    seen = [(s.epoch, s.index, s.global_step, s.indices) for e in loop.epochs() for s in loop.steps()]
    assert seen == [(0, 0, 0, None), (0, 1, 1, None), (0, 2, 2, None), (1, 0, 3, None), (1, 1, 4, None),
                    (1, 2, 5, None)]
    assert loop.finished and load_checkpoint(run.checkpoint_dir / "latest.pt")["loop"]["global"] == 6
    early = ResumableLoop(None, epochs=1, seed=0, steps_per_epoch=3, progress_bar=False)
    with pytest.raises(RuntimeError, match="ended after 0 of 3 steps"):
        for _ in early.epochs():
            for _ in early.steps():
                break
    with pytest.raises(TypeError, match="no state_dict"):
        early.track(thing=object())
    with pytest.raises(ValueError, match="either num_examples"):
        ResumableLoop(None, epochs=1, seed=0)
    with pytest.raises(ValueError, match="needs batch_size"):
        ResumableLoop(None, epochs=1, seed=0, num_examples=5)


def test_stopwatch_counts_cpu_and_wall_time() -> None:
    import time as _time

    from experiments.common.training import Stopwatch

    watch = Stopwatch()
    _time.sleep(0.05)
    busy = _time.process_time() + 0.05
    while _time.process_time() < busy:  # burn CPU time
        pass
    seconds = watch.seconds()
    assert seconds["wall_seconds"] >= 0.1 and 0.05 <= seconds["cpu_seconds"] <= seconds["wall_seconds"] + 0.05
