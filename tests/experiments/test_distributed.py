"""torch.distributed helpers: the single-process no-op path, and a real 2-process DDP run under torchrun."""

from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from experiments.common import distributed
from experiments.common.runs import read_csv
from experiments.common.training import capture_rng_state, restore_rng_state
from invertible.checkpoint import load_checkpoint

STUDY_PATH = Path(__file__).with_name("tiny_study.py")
DDP_ARGS = ["--float64", "--dropout", "0", "--epochs", "1", "--checkpoint-every", "15"]


def test_single_process_path_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    info = distributed.init_distributed("cpu")
    assert (info.rank, info.world_size, info.enabled, info.backend) == (0, 1, False, None)
    assert not distributed.is_distributed() and distributed.is_main()
    assert (distributed.rank(), distributed.world_size(), distributed.local_rank()) == (0, 1, 0)
    x = torch.tensor([1.0, 2.0])
    total = distributed.all_reduce_sum(x)
    assert torch.equal(total, x) and total is not x
    assert torch.equal(distributed.all_reduce_mean(x), x)
    assert distributed.reduce_metrics({"loss": 3.0, "acc": 1.0}, 4) == {"loss": 0.75, "acc": 0.25}
    with pytest.raises(ValueError, match="zero examples"):
        distributed.reduce_metrics({"loss": 1.0}, 0)
    assert distributed.all_gather_objects({"a": 1}) == [{"a": 1}]
    assert distributed.broadcast_object("x") == "x"
    distributed.barrier()
    model = torch.nn.Linear(2, 2)
    assert distributed.wrap_model(model) is model
    assert distributed.main_only(lambda: 5)() == 5
    distributed.shutdown()


def test_rank_comes_from_torchrun_variables_before_init(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert (distributed.rank(), distributed.world_size(), distributed.local_rank()) == (1, 2, 1)
    assert not distributed.is_main() and distributed.main_only(lambda: 5)() is None
    with pytest.raises(RuntimeError, match="call experiments.common.distributed.init_distributed"):
        distributed.all_reduce_sum(torch.ones(1))
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(RuntimeError, match="MASTER_ADDR"):
        distributed.init_distributed("cpu")


def test_configure_logging_quiets_other_ranks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    root = logging.getLogger()
    saved = (root.level, root.handlers[:])
    try:
        monkeypatch.setenv("RANK", "1")
        monkeypatch.setenv("WORLD_SIZE", "2")
        distributed.configure_logging(logging.INFO)
        assert root.level == logging.WARNING and "[rank 1]" in root.handlers[-1].formatter._fmt
        monkeypatch.setenv("RANK", "0")
        distributed.configure_logging(logging.INFO, file=tmp_path / "log.txt")
        assert root.level == logging.INFO
        logging.getLogger("experiments.test").info("hello from rank 0")
        for handler in root.handlers:
            handler.flush()
        assert "[rank 0] INFO experiments.test: hello from rank 0" in (tmp_path / "log.txt").read_text()
    finally:
        for handler in root.handlers:
            if handler not in saved[1]:
                handler.close()
        root.handlers[:] = saved[1]
        root.setLevel(saved[0])


def test_ddp_on_two_cpu_processes_matches_one_process(tmp_path: Path) -> None:
    """Parameters stay identical across ranks and equal a single-process run on the same global batches."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(STUDY_PATH),
           "--out", str(out), *DDP_ARGS]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    spec = importlib.util.spec_from_file_location("tiny_study_ddp", STUDY_PATH)
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    threads, rng = torch.get_num_threads(), capture_rng_state()
    torch.set_num_threads(1)
    try:
        single = study.main(["--out", str(tmp_path / "single"), *DDP_ARGS])
    finally:
        torch.set_num_threads(threads)
        restore_rng_state(rng)

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and single["world_size"] == 1
    assert metrics["rank_param_spread"] == 0.0  # DDP keeps ranks bit-identical
    assert metrics["test_loss"] == pytest.approx(single["test_loss"], rel=1e-9)
    assert metrics["test_acc"] == single["test_acc"]
    a = load_checkpoint(out / "checkpoints" / "latest.pt")["state"]["model"]
    b = load_checkpoint(tmp_path / "single" / "checkpoints" / "latest.pt")["state"]["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-9, atol=1e-11)
    # Only rank 0 wrote, and the all-reduced losses equal the single process's global-batch losses.
    steps, single_steps = read_csv(out / "steps.csv"), read_csv(tmp_path / "single" / "steps.csv")
    assert len(steps) == len(single_steps) == 45
    for row, ref in zip(steps, single_steps):
        assert row["step"] == ref["step"] and float(row["loss"]) == pytest.approx(float(ref["loss"]), rel=1e-9)
    assert len(load_checkpoint(out / "checkpoints" / "latest.pt")["rng"]) == 2  # every rank's RNG state


def test_collective_code_paths_in_a_one_process_group(tmp_path: Path) -> None:
    """The distributed branches (broadcast of folder errors, gathers, reductions) run in a gloo group of one."""
    import torch.distributed as dist

    from experiments.common.runs import RunExists, open_run

    dist.init_process_group("gloo", init_method=(tmp_path / "store").as_uri(), rank=0, world_size=1)
    try:
        assert distributed.is_distributed() and distributed.world_size() == 1
        assert torch.equal(distributed.all_reduce_sum(torch.tensor([2.0])), torch.tensor([2.0]))
        assert distributed.reduce_metrics({"loss": 6.0}, 3) == {"loss": 2.0}
        assert distributed.all_gather_objects({"a": torch.ones(2)})[0]["a"].sum() == 2
        assert distributed.broadcast_object([1, 2]) == [1, 2]
        open_run(tmp_path / "run", {"seed": 0})
        with pytest.raises(RunExists, match="already exists"):
            open_run(tmp_path / "run", {"seed": 0})
        model = torch.nn.Linear(2, 1)
        wrapped = distributed.wrap_model(model)
        assert type(wrapped).__name__ == "DistributedDataParallel" and wrapped.module is model
    finally:
        distributed.shutdown()
    assert not distributed.is_distributed()


def _global_bn_worker(rank: int, world: int, init: str, out: str) -> None:
    """One rank of the GlobalBatchNorm check: its shard through the converted BN, output and grads saved."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        x = torch.randn(8, 3, 2, dtype=torch.float64) * 3 + 1
        bn = distributed.convert_batchnorm(torch.nn.Sequential(torch.nn.BatchNorm1d(3).double()))
        with torch.no_grad():
            bn[0].weight.copy_(torch.tensor([0.5, 1.0, 2.0]))
        part = torch.tensor_split(x, world)[rank].clone().requires_grad_(True)
        y = bn(part)
        (y * torch.arange(y.numel(), dtype=y.dtype).view_as(y)).sum().backward()
        # DDP averages the parameter gradients over ranks: do it by hand here
        weight_grad = distributed.all_reduce_mean(bn[0].weight.grad)
        torch.save({"y": y.detach(), "x_grad": part.grad, "w_grad": weight_grad,
                    "running_var": bn[0].running_var}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_global_batchnorm_on_two_processes_equals_batchnorm_on_the_whole_batch(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    mp.spawn(_global_bn_worker, args=(2, (tmp_path / "store").as_uri(), str(tmp_path)), nprocs=2, join=True)
    torch.manual_seed(0)
    x = (torch.randn(8, 3, 2, dtype=torch.float64) * 3 + 1).requires_grad_(True)
    bn = torch.nn.BatchNorm1d(3).double()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.5, 1.0, 2.0]))
    y = bn(x)
    weights = torch.cat([torch.arange(t.numel(), dtype=y.dtype).view_as(t) for t in torch.tensor_split(y, 2)])
    (y * weights).sum().div(2).backward()  # the mean of the two ranks' losses
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    torch.testing.assert_close(torch.cat([r["y"] for r in ranks]), y.detach())
    # each rank's input gradient is that of the sum of the ranks' losses (the all-reduce's backward sums), so
    # the parameter gradients that DDP averages are those of the mean loss
    torch.testing.assert_close(torch.cat([r["x_grad"] for r in ranks]) / 2, x.grad)
    for r in ranks:
        torch.testing.assert_close(r["w_grad"], bn.weight.grad)
        torch.testing.assert_close(r["running_var"], bn.running_var)
    # outside a process group it is a plain BatchNorm
    plain = distributed.convert_batchnorm(torch.nn.BatchNorm1d(3).double())
    assert isinstance(plain, distributed.GlobalBatchNorm)
    torch.testing.assert_close(plain(x.detach()), torch.nn.BatchNorm1d(3).double()(x.detach()))
