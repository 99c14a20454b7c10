"""Checkpoints: exact round trips, atomic writes, weights-only loading and clear errors."""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from invertible.checkpoint import (
    VERSION,
    CheckpointError,
    CheckpointNotFound,
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)


@pytest.fixture(autouse=True)
def keep_global_rng_states():
    """These tests reseed the global generators; leave them as they were for other tests."""
    saved = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    yield
    random.setstate(saved[0])
    np.random.set_state(saved[1])
    torch.set_rng_state(saved[2])


def _trained_pair() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(5, 3, dtype=torch.float64)).square().sum().backward()
        opt.step()
    return model, opt


def test_round_trip_restores_model_optimizer_and_metadata_exactly(tmp_path: Path) -> None:
    model, opt = _trained_pair()
    meta = {"step": 3, "name": "run", "losses": [1.5, float("inf")], "nested": {"a": None, "b": True}}
    path = save_checkpoint(tmp_path / "c.pt", model=model.state_dict(), optimizer=opt.state_dict(), meta=meta,
                           dtype=torch.float32, size=torch.Size([2, 3]))
    parts = load_checkpoint(path)
    assert set(parts) == {"model", "optimizer", "meta", "dtype", "size"}
    assert parts["meta"] == meta and parts["dtype"] is torch.float32 and parts["size"] == torch.Size([2, 3])

    model2 = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
    opt2 = torch.optim.Adam(model2.parameters(), lr=1e-2)
    model2.load_state_dict(parts["model"])
    opt2.load_state_dict(parts["optimizer"])
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)
    # One more identical step on both must give bit-identical parameters (Adam moments restored).
    x = torch.randn(5, 3, dtype=torch.float64)
    for m, o in ((model, opt), (model2, opt2)):
        o.zero_grad()
        m(x).square().sum().backward()
        o.step()
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)


def test_map_location_moves_tensors(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "c.pt", t=torch.arange(3.0))
    parts = load_checkpoint(tmp_path / "c.pt", map_location="cpu")
    assert parts["t"].device.type == "cpu" and torch.equal(parts["t"], torch.arange(3.0))


def test_rng_state_round_trip_reproduces_all_generators(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0, 1)  # leaves a cached gaussian in python's state
    np.random.standard_normal()
    save_checkpoint(tmp_path / "rng.pt", rng=get_rng_state())
    expected = (random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), np.random.standard_normal(),
                torch.rand(3).tolist())
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    set_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    again = (random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), np.random.standard_normal(),
             torch.rand(3).tolist())
    assert again == expected


def test_malformed_rng_state_is_a_clear_error() -> None:
    with pytest.raises(CheckpointError, match="RNG state"):
        set_rng_state({"python": {}})


def test_unstorable_part_is_refused_before_touching_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    save_checkpoint(path, step=1)
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match=r"'model'.*Linear.*state_dict"):
        save_checkpoint(path, model=torch.nn.Linear(2, 2))
    with pytest.raises(CheckpointError, match=r"numpy.ndarray.*from_numpy"):
        save_checkpoint(path, stats={"x": [np.zeros(2)]})
    with pytest.raises(CheckpointError, match="plain str"):
        save_checkpoint(path, version=torch.__version__)  # a str subclass would need unpickling of code
    assert path.read_bytes() == before
    assert load_checkpoint(path) == {"step": 1}


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        save_checkpoint(tmp_path / "nope" / "c.pt", step=1)


def test_failed_write_keeps_previous_checkpoint_and_leaves_no_temp_files(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "latest.pt"
    save_checkpoint(path, step=1, w=torch.ones(4))

    def crash(obj, handle, *args, **kwargs):
        handle.write(b"PK\x03\x04 half a file")
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, step=2, w=torch.zeros(4))
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt"]
    parts = load_checkpoint(path)
    assert parts["step"] == 1 and torch.equal(parts["w"], torch.ones(4))


def test_written_file_has_ordinary_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        save_checkpoint(tmp_path / "c.pt", step=1)
    finally:
        os.umask(old)
    assert (tmp_path / "c.pt").stat().st_mode & 0o777 == 0o644


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFound, match=r"nope\.pt does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="not a file"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("keep", [0, 0.5, 0.9])
def test_truncated_file(tmp_path: Path, keep: float) -> None:
    good = save_checkpoint(tmp_path / "good.pt", w=torch.randn(100), meta={"a": 1})
    data = good.read_bytes()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(data[: int(len(data) * keep)])
    expected = "empty" if keep == 0 else "truncated or corrupted"
    with pytest.raises(CheckpointError, match=expected) as info:
        load_checkpoint(bad)
    assert "bad.pt" in str(info.value)


def test_corrupted_bytes(tmp_path: Path) -> None:
    bad = tmp_path / "noise.pt"
    bad.write_bytes(b"\x00\x13 not a checkpoint " * 20)
    with pytest.raises(CheckpointError, match="noise.pt"):
        load_checkpoint(bad)


class _Payload:
    """Unpickling this calls a function: exactly what a checkpoint loader must refuse."""

    def __reduce__(self):
        return (os.makedirs, (str(_Payload.target),))

    target = Path("/nonexistent")


def test_code_carrying_pickle_is_refused_without_running_it(tmp_path: Path) -> None:
    _Payload.target = tmp_path / "created_by_unpickling"
    torch.save({"model": _Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"evil\.pt.*refuses to execute code") as info:
        load_checkpoint(tmp_path / "evil.pt")
    assert "os.makedirs" in str(info.value) or "posix.makedirs" in str(info.value)
    assert not _Payload.target.exists()


def test_plain_python_pickle_is_refused(tmp_path: Path) -> None:
    _Payload.target = tmp_path / "created_by_unpickling"
    with open(tmp_path / "plain.pkl", "wb") as handle:
        pickle.dump({"model": _Payload()}, handle, protocol=4)
    with pytest.raises(CheckpointError, match="plain.pkl"):
        load_checkpoint(tmp_path / "plain.pkl")
    assert not _Payload.target.exists()


def test_foreign_state_dict_names_what_was_found(tmp_path: Path) -> None:
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match=r"not an invertible checkpoint.*'weight', 'bias'"):
        load_checkpoint(tmp_path / "foreign.pt")
    torch.save(torch.zeros(2, 3), tmp_path / "tensor.pt")
    with pytest.raises(CheckpointError, match=r"tensor of shape \(2, 3\)"):
        load_checkpoint(tmp_path / "tensor.pt")


def test_future_version_is_refused(tmp_path: Path) -> None:
    torch.save({"format": "invertible-checkpoint", "version": VERSION + 1, "parts": {}}, tmp_path / "new.pt")
    with pytest.raises(CheckpointError, match=rf"new\.pt has format version {VERSION + 1}.*upgrade"):
        load_checkpoint(tmp_path / "new.pt")
    torch.save({"format": "invertible-checkpoint", "version": "1", "parts": {}}, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="invalid format version"):
        load_checkpoint(tmp_path / "odd.pt")


def test_cuda_rng_states_without_cuda_are_skipped_with_a_warning(monkeypatch, caplog) -> None:
    state = get_rng_state()
    state["cuda"] = [torch.zeros(16, dtype=torch.uint8)]  # as saved on a GPU machine
    first = torch.rand(2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level("WARNING", logger="invertible.checkpoint"):
        set_rng_state(state)
    assert "CUDA is not available" in caplog.text
    assert torch.equal(torch.rand(2), first)  # the CPU states were still restored
