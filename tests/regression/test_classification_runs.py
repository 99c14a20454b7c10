"""Short runs of ``python -m experiments.classification`` on the embedded digits: the run folder, resumption after
a kill, bad input, and two processes under torchrun against one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
import torch

from experiments.classification import main
from experiments.classification.readme_runs import ALL_RUNS
from experiments.classification.train import EPOCH_FIELDS, EVERY_N_FIELDS, GRAD_FIELDS, ITERATION_FIELDS, SVD_FIELDS
from experiments.common.runs import read_csv
from experiments.common.training import capture_rng_state, restore_rng_state
from invertible.checkpoint import load_checkpoint, save_checkpoint

#: A small affine flow (1 step per level, width 8): 6 iterations per epoch on digits.
TINY = ["--coupling", "affine", "--permutation", "conv", "--zero-init", "--use-prior", "--use-actnorm",
        "--depth", "1", "--hidden-channels", "8", "--batch-size", "256", "--threads", "1"]
TIME_COLUMNS = {"time_elapsed"}


@pytest.fixture(autouse=True)
def leave_global_state_alone() -> Iterator[None]:
    """main() sets the thread count and seeds the global RNGs: restore both."""
    threads, rng = torch.get_num_threads(), capture_rng_state()
    yield
    torch.set_num_threads(threads)
    restore_rng_state(rng)


def _rows(path: Path) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k not in TIME_COLUMNS} for row in read_csv(path)]


def _metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def test_a_run_writes_its_folder_and_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    code = main([*TINY, "--epochs", "2", "--log-every", "3", "--svd-every", "4", "--svd-samples", "2",
                 "--save-every", "6", "--plot-csv", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "INN classifier on digits" in printed and "invertible      yes" in printed and str(out) in printed
    config = json.loads((out / "config.json").read_text())
    assert config["args"]["coupling"] == "affine" and config["args"]["depth"] == 1
    headers = {"iteration_log": ITERATION_FIELDS, "every_N_log": EVERY_N_FIELDS, "svd_log": SVD_FIELDS,
               "epoch_log": EPOCH_FIELDS, "grad_log": GRAD_FIELDS}
    for name, fields in headers.items():
        assert (out / f"{name}.csv").read_text().splitlines()[0] == ",".join(fields)
    iterations = read_csv(out / "iteration_log.csv")
    assert [int(r["global_iteration"]) for r in iterations] == list(range(1, 13))
    assert [int(r["global_iteration"]) for r in read_csv(out / "every_N_log.csv")] == [0, 3, 6, 9, 12]
    svd = read_csv(out / "svd_log.csv")
    assert [int(r["global_iteration"]) for r in svd] == [0, 4, 8, 12]
    assert all(float(r["condition_num"]) >= 1 and float(r["inverse_condition_num"]) >= 1 for r in svd)
    epochs = read_csv(out / "epoch_log.csv")
    assert [int(r["epoch"]) for r in epochs] == [1]  # --eval-every 2 (and the last epoch)
    metrics = _metrics(out)
    assert metrics["status"] == "completed" and metrics["steps"] == 12 and metrics["world_size"] == 1
    assert metrics["test_acc"] == pytest.approx(float(epochs[-1]["test_acc"]))
    assert 0 < metrics["recons_test_max"] < 1e-3 and metrics["non_invertible"] is False
    # at initialisation the forward and inverse condition numbers agree (float64 Jacobians): kappa(J^-1) = kappa(J)
    assert float(svd[0]["inverse_condition_num"]) == pytest.approx(float(svd[0]["condition_num"]), rel=1e-6)
    assert metrics["cond_inverse"] == pytest.approx(metrics["cond_forward"], rel=1e-4)
    assert metrics["grad_angle"] < 1e-3
    # the library's verdict over the whole train and test sets, kappa at the worst-reconstructed and fixed images
    for split, n in (("train", 1438), ("test", 359)):
        verdict = metrics["verdicts"][split]
        assert verdict["invertible"] is True and verdict["n"] == n and verdict["rtol"] == 1e-2
        assert verdict["worst_relative"] == pytest.approx(metrics[f"recons_{split}_max_relative"])
        assert len(verdict["at_worst"]["indices"]) == 3 and verdict["at_worst"]["indices"][0] == verdict["worst_index"]
        assert all(k >= 1 for k in verdict["at_worst"]["kappa_forward"] + verdict["at_fixed"]["kappa_forward"])
        assert verdict["at_fixed"]["kappa_forward"] == pytest.approx(verdict["at_fixed"]["kappa_inverse"], rel=1e-6)
    assert verdict["at_fixed"]["indices"] == [192, 193]  # the paper's fixed test images (--svd-samples 2)
    assert metrics["invertible"] is True and metrics["first_noninvertible_iteration"] == -1
    assert [r["invertible"] for r in epochs] == ["1"] and float(epochs[0]["kappa_at_worst"]) >= 1
    # memory-saving against standard gradients on the fixed training batch, every --log-every iterations
    grad = read_csv(out / "grad_log.csv")
    assert [int(r["global_iteration"]) for r in grad] == [0, 3, 6, 9, 12]
    assert all(float(r["grad_angle"]) < 1e-3 and float(r["kappa"]) >= 1 and r["grad_finite"] == "True" for r in grad)
    for png in ("loss_accuracy", "stability", "reconstructions", "iterations", "memory_saving", "angle_vs_kappa"):
        assert (out / "plots" / f"{png}.png").read_bytes()[:4] == b"\x89PNG"
    assert {p.name for p in (out / "checkpoints").iterdir()} == {"init.pt", "latest.pt", "iter_6.pt", "iter_12.pt"}
    state = load_checkpoint(out / "checkpoints" / "latest.pt")
    assert state["loop"] == {"epoch": 2, "step": 0, "global": 12}


def _wait_for_rows(path: Path, rows: int, proc: subprocess.Popen, timeout: float = 240.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.is_file() and len(read_csv(path)) >= rows:
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (code {proc.returncode}) before it could be killed")
        time.sleep(0.05)
    raise AssertionError(f"{path} did not reach {rows} rows in {timeout} s")


RESUME = [*TINY, "--epochs", "3", "--batch-size", "128", "--log-every", "5", "--svd-every", "10",
          "--svd-samples", "1", "--checkpoint-every", "4", "--eval-every", "1", "--nf-coeff", "1e-4",
          "--fd-coeff", "1e-3", "--fd-inv-coeff", "1e-3", "--regularize-every", "3", "--mem-saving",
          "--lr-decay-epochs", "2"]


def test_a_killed_run_resumes_to_the_same_result(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """While the run lives, its folder can be neither resumed nor overwritten; after SIGKILL its lock is stale and
    --resume takes it over: logs and metrics equal an uninterrupted run's (time columns aside)."""
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "experiments.classification", *RESUME, "--out", str(killed)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for_rows(killed / "iteration_log.csv", 14, proc)  # checkpoints at 4, 8, 12 (epoch 1 ends at 12)
        proc.send_signal(signal.SIGSTOP)  # hold it still (alive, lock held) while the others try
        rows = len(read_csv(killed / "iteration_log.csv"))
        for mode in ("--resume", "--overwrite"):
            assert main([*RESUME, "--out", str(killed), mode]) == 2
            assert f"is in use by process {proc.pid}" in capsys.readouterr().err
        assert len(read_csv(killed / "iteration_log.csv")) == rows  # the live run's logs are untouched
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (killed / "metrics.json").exists()
    assert str(proc.pid) in (killed / ".lock").read_text()  # stale: its process is gone
    assert main([*RESUME, "--out", str(killed), "--resume"]) == 0

    reference = tmp_path / "reference"
    assert main([*RESUME, "--out", str(reference)]) == 0
    for name in ("iteration_log", "every_N_log", "svd_log", "epoch_log", "grad_log"):
        assert _rows(killed / f"{name}.csv") == _rows(reference / f"{name}.csv"), name
    a, b = _metrics(killed), _metrics(reference)
    for timing in ("seconds", "cpu_seconds", "timing"):
        a.pop(timing), b.pop(timing)
    assert not (killed / ".lock").exists() and not (reference / ".lock").exists()
    assert a == b
    assert len(read_csv(reference / "iteration_log.csv")) == 36


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    threads, rng = torch.get_num_threads(), capture_rng_state()
    try:
        assert main([*TINY, "--epochs", "1", "--svd-samples", "1", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
        restore_rng_state(rng)
    return out


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_existing_run_is_never_overwritten_without_asking(finished: Path, capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    before = _snapshot(finished)
    assert main([*TINY, "--epochs", "1", "--svd-samples", "1", "--out", str(finished)]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert _snapshot(finished) == before


def test_resume_with_another_config_is_refused(finished: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _snapshot(finished)
    assert main([*TINY, "--epochs", "1", "--svd-samples", "1", "--lr", "1e-2", "--out", str(finished),
                 "--resume"]) == 2
    err = capsys.readouterr().err
    assert "differ from the stored run" in err and "lr: 0.001 (stored) != 0.01 (now)" in err
    assert _snapshot(finished) == before


@pytest.mark.parametrize("damage", ["garbage", "plain_state_dict", "other_study"])
def test_a_corrupted_or_foreign_checkpoint_is_a_clear_error(finished: Path, tmp_path: Path, damage: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    latest = run / "checkpoints" / "latest.pt"
    if damage == "garbage":
        latest.write_bytes(b"not a checkpoint at all")
    elif damage == "plain_state_dict":
        torch.save({"weight": torch.zeros(2)}, latest)
    else:  # a valid checkpoint of something else
        latest.unlink()
        save_checkpoint(latest, loop={"epoch": 0, "step": 1, "global": 1}, state={"model": {"w": torch.zeros(1)}},
                        rng=[], _run={"csv_rows": {}, "metrics": "{}"})
    assert main([*TINY, "--epochs", "1", "--svd-samples", "1", "--out", str(run), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "latest.pt" in err


def test_missing_data_and_impossible_architecture_leave_no_folder(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--dataset", "svhn", "--data-dir", str(tmp_path / "nothing"), "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "data set 'svhn' (train split) not found" in err and "How to get it" in err
    assert main([*TINY, "--n-levels", "4", "--out", str(tmp_path / "b")]) == 2
    assert "impossible architecture for digits (1x8x8 images)" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


DDP = [*TINY, "--dtype", "float64", "--epochs", "1", "--batch-size", "100", "--log-every", "5", "--svd-every", "100",
       "--svd-samples", "1", "--nf-coeff", "1e-3", "--fd-coeff", "1e-2", "--fd-inv-coeff", "1e-2",
       "--fd-variant", "original", "--regularize-every", "2", "--mem-saving", "--checkpoint-every", "7"]


def test_two_processes_under_torchrun_match_one_process(tmp_path: Path) -> None:
    """Ranks stay bit-identical, and match a single process on the same global batches (float64)."""
    ddp = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "experiments.classification", *DDP, "--out", str(ddp)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    single = tmp_path / "single"
    assert main([*DDP, "--out", str(single)]) == 0
    a, b = _metrics(ddp), _metrics(single)
    assert (a["world_size"], b["world_size"], a["rank_param_spread"]) == (2, 1, 0.0)
    for key in ("test_loss", "train_loss", "recons_test_mean", "cond_forward"):
        assert a[key] == pytest.approx(b[key], rel=1e-9), key
    assert (a["test_acc"], a["train_acc"]) == (b["test_acc"], b["train_acc"])
    rows, ref = read_csv(ddp / "iteration_log.csv"), read_csv(single / "iteration_log.csv")
    assert len(rows) == len(ref) == 15  # ceil(1438 / 100): the last batch of 38 splits 19 + 19
    for row, expected in zip(rows, ref):
        for key in ("loss", "xentropy_loss", "train_acc", "g_norm", "z_norm"):
            assert float(row[key]) == pytest.approx(float(expected[key]), rel=1e-9), key
    assert {row["nf_term"] != "" for row in rows} == {True, False}  # regularized on every other iteration


@pytest.mark.parametrize("name", list(ALL_RUNS))
def test_each_readme_command_runs(name: str, tmp_path: Path) -> None:
    """The README's commands (and the additive baselines), translated, each for three iterations."""
    out = tmp_path / name
    flags = [*ALL_RUNS[name], "--depth", "1", "--hidden-channels", "8", "--epochs", "1", "--batch-size", "512",
             "--svd-samples", "1", "--log-every", "2", "--threads", "1"]
    assert main([*flags, "--out", str(out)]) == 0
    metrics = _metrics(out)
    assert metrics["status"] == "completed" and metrics["steps"] == 3 and not metrics["non_invertible"]
    rows = read_csv(out / "iteration_log.csv")
    regularized = [r["global_iteration"] for r in rows if r["nf_term"] or r["fd_term"] or r["fd_inv_term"]]
    expected = {"nf": ["1", "2", "3"], "fd": ["1"]}.get(name.rsplit("_", 1)[-1], [])  # FD: --regularize-every 10
    assert regularized == expected
    angle = read_csv(out / "every_N_log.csv")[1]["grad_angle"]  # checked only with --mem-saving
    assert (angle != "") == name.endswith("_fd") and (angle == "" or float(angle) < 1e-3)


def test_twin_trains_the_unregularized_twin_and_shows_both(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    """--twin: the same run without its NF term, in <run>/twin, both in metrics.json and printed side by side; the
    twin equals a separate unregularized run of the same flags (negative control: the regularized model differs)."""
    flags = [*TINY, "--epochs", "1", "--svd-samples", "1", "--log-every", "3"]
    out = tmp_path / "run"
    assert main([*flags, "--nf-coeff", "1e-3", "--twin", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "The regularizer's effect" in printed and "unregularized twin" in printed
    assert "regularized (NF 0.001)" in printed
    metrics, twin = _metrics(out), _metrics(out / "twin")
    assert metrics["twin"]["test_acc"] == twin["test_acc"] and metrics["twin"]["verdicts"] == twin["verdicts"]
    stored = json.loads((out / "twin" / "config.json").read_text())["args"]
    assert stored["nf_coeff"] == -1.0 and stored["twin"] is False and stored["seed"] == 3
    plain = tmp_path / "plain"
    assert main([*flags, "--out", str(plain)]) == 0
    assert _rows(out / "twin" / "iteration_log.csv") == _rows(plain / "iteration_log.csv")
    assert _rows(out / "iteration_log.csv") != _rows(plain / "iteration_log.csv")
    # a twin needs something to leave out: a usage error that writes nothing
    assert main([*flags, "--twin", "--out", str(tmp_path / "none")]) == 2
    assert "--twin trains the unregularized twin" in capsys.readouterr().err and not (tmp_path / "none").exists()
