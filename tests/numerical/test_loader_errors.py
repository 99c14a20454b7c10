"""Damaged and foreign files given to the loaders: the documented exceptions (``FileNotFoundError`` for nothing
there, ``ValueError`` for a file that cannot be read) with messages that say what to do, and no code from the file
ever runs."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from invertible.loaders import load_resflow, load_y0ast_glow, read_torch_file

LOADERS = {"read_torch_file": read_torch_file, "load_resflow": load_resflow,
           "load_y0ast_glow": lambda p: load_y0ast_glow(p, check_hparams=False)}


class _RunsCode:
    """Unpickling this object runs ``os.system`` (writes a marker file) where a plain unpickler is used."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {self.marker}",)


def _files(folder: Path) -> dict[str, Path]:
    state = {"w": torch.arange(100.0)}
    torch.save(state, folder / "zip.pt")
    torch.save(state, folder / "legacy.pt", _use_new_zipfile_serialization=False)
    files = {}
    for name, data in {
        "empty": b"",
        "zip_truncated": (folder / "zip.pt").read_bytes()[:300],
        "legacy_truncated": (folder / "legacy.pt").read_bytes()[:200],
        "legacy_cut_short": (folder / "legacy.pt").read_bytes()[:-5],
        "garbage": bytes(range(256)) * 3,
    }.items():
        files[name] = folder / f"{name}.pt"
        files[name].write_bytes(data)
    return files


@pytest.mark.parametrize("loader", list(LOADERS))
def test_damaged_files_raise_value_errors_that_say_what_to_do(tmp_path: Path, loader: str) -> None:
    for name, path in _files(tmp_path).items():
        with pytest.raises(ValueError, match=r"(empty \(0 bytes\)|truncated or damaged|damaged).*(fetch|torch\.save)"):
            LOADERS[loader](path)
    # negative control: the intact file is read
    if loader == "read_torch_file":
        assert torch.equal(read_torch_file(tmp_path / "legacy.pt").obj["w"], torch.arange(100.0))


@pytest.mark.parametrize("loader", list(LOADERS))
def test_missing_paths_raise_file_not_found(tmp_path: Path, loader: str) -> None:
    with pytest.raises(FileNotFoundError):
        LOADERS[loader](tmp_path / "absent.pt")


@pytest.mark.parametrize("loader", list(LOADERS))
@pytest.mark.parametrize("legacy", [False, True])
def test_files_that_would_run_code_are_read_without_running_it(tmp_path: Path, loader: str, legacy: bool) -> None:
    marker = tmp_path / "code_ran"
    path = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "payload": _RunsCode(marker)}, path,
               _use_new_zipfile_serialization=not legacy)
    # negative control: a plain unpickler would run it
    control = tmp_path / "control_ran"
    pickle.loads(pickle.dumps(_RunsCode(control)))
    assert control.exists()
    try:
        result = LOADERS[loader](path)
    except ValueError as exc:  # the checkpoint loaders refuse it (not their layout): fine, as long as nothing ran
        assert "Traceback" not in str(exc)
    else:
        assert loader == "read_torch_file"
        assert result.placeholders == ["posix.system"] or result.placeholders == ["nt.system"]
    assert not marker.exists()
