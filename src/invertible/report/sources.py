"""What ``MODEL`` names, loaded as a :class:`Subject`: the flow, its input shape and how unit-range images map
into its input space.

``MODEL`` is one of

- a run folder of our classification study (``config.json`` and ``checkpoints/``), or one of its checkpoints
  (``<run>/checkpoints/latest.pt``): the run's flow with the checkpoint's weights (read with
  ``weights_only=True``), its test images as the default data;
- a y0ast Glow: the ``glow/`` folder, ``glow.zip`` or ``glow_affine_coupling.pt``
  (:func:`~invertible.loaders.load_y0ast_glow`);
- an rtqichen Residual Flow ``.pth`` (:func:`~invertible.loaders.load_resflow`, training weights);
- ``package.module:factory``: a callable returning a flow that follows the layer contract, or a pair
  ``(flow, inputs)`` whose inputs become the default data; ``state_dict=`` loads weights into it.

Every failure to find or read a model raises :class:`ReportError` saying what was wrong and what to pass.
"""

from __future__ import annotations

import importlib
import json
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..base import InvertibleModule
from ..checkpoint import FORMAT, CheckpointError, load_checkpoint

__all__ = ["ReportError", "Subject", "load_subject"]

#: The run folders of these studies can be loaded: study -> ``module:function`` returning ``(args, data, model)``
#: (resolved by name, so that the library does not import the experiments package).
RUN_LOADERS = {"classification": "experiments.classification.reload:load_run"}


class ReportError(ValueError):
    """A usage error of the report: a missing or unreadable model, a wrong input shape, a bad option."""


@dataclass
class Subject:
    """A flow to report on.

    Attributes:
        name: a short name for titles and file names.
        kind: ``"run"``, ``"y0ast-glow"``, ``"rtqichen-resflow"`` or ``"factory"``.
        flow: the flow (eval mode), in its working precision.
        source: where it came from, in words.
        input_shape: shape of one input (``None``: unknown until inputs are given).
        data: default input sets by name, already in the flow's input space (may be empty).
        from_unit: maps unit-range images ``[0, 1]`` of ``input_shape`` to the flow's input space (for the noise
            sets; the identity unless the source knows its preprocessing).
        unit_note: how :attr:`from_unit` maps, in words.
        generative: a flow trained as a density model (its samples are worth reconstructing).
        memory_saving: trained with memory-saving backprop (its gradient self-check is worth running).
    """

    name: str
    kind: str
    flow: InvertibleModule
    source: str
    input_shape: tuple[int, ...] | None = None
    data: dict[str, Tensor] = field(default_factory=dict)
    from_unit: Callable[[Tensor], Tensor] = lambda u: u
    unit_note: str = "noise sets are fed as they are (unit range)"
    generative: bool = False
    memory_saving: bool = False

    @property
    def dtype(self) -> torch.dtype:
        return next((p.dtype for p in self.flow.parameters()), torch.float32)


def _resolve(spec: str, what: str) -> Any:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ReportError(f"{what} {spec!r} is not of the form package.module:factory")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ReportError(f"{what} {spec!r}: cannot import {module_name!r} ({exc}); put its folder on PYTHONPATH "
                          "or install the package") from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ReportError(f"{what} {spec!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


#: Flags only a study's runs have, to recognise a run started in-process (whose command is not the study's).
RUN_SIGNATURES = {"classification": {"n_levels", "coupling", "nf_coeff", "fd_inv_coeff", "inj_pad"}}


def _study_of(folder: Path) -> str:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ReportError(f"{folder}/config.json cannot be read ({exc}); is this a run folder?") from exc
    command = " ".join(str(c) for c in config.get("command", []))
    found = re.search(r"experiments[./](\w+)", command)
    if found is not None:
        return found.group(1)
    flags = set(config.get("args", {}))
    for study, signature in RUN_SIGNATURES.items():
        if signature <= flags:
            return study
    raise ReportError(f"{folder}: config.json does not say which study wrote this run (no experiments.<study> in "
                      "its command, no known flags); pass the model as package.module:factory instead")


def _run_subject(folder: Path, checkpoint: str) -> Subject:
    study = _study_of(folder)
    if study not in RUN_LOADERS:
        raise ReportError(f"{folder} is a run of the {study!r} study, whose run folders the report cannot load yet "
                          f"(it knows {', '.join(RUN_LOADERS)}); pass its flow as package.module:factory")
    if not (folder / "checkpoints" / f"{checkpoint}.pt").is_file():
        have = sorted(p.stem for p in (folder / "checkpoints").glob("*.pt"))
        raise ReportError(f"{folder} has no checkpoints/{checkpoint}.pt (it has {have or 'none'}); the run has not "
                          "written a checkpoint yet, or give another with --checkpoint")
    try:
        args, data, model = _resolve(RUN_LOADERS[study], "run loader")(folder, checkpoint)
    except CheckpointError as exc:
        raise ReportError(str(exc)) from exc
    except RuntimeError as exc:  # load_state_dict: missing/unexpected keys or shape mismatches
        raise ReportError(f"{folder}/checkpoints/{checkpoint}.pt does not fit the run's model "
                          f"({str(exc).splitlines()[0]}); the folder's config.json and checkpoint disagree") from exc
    mean = torch.tensor(data.mean, dtype=torch.float64).view(1, -1, 1, 1)
    std = torch.tensor(data.std, dtype=torch.float64).view(1, -1, 1, 1)
    dtype = next(model.parameters()).dtype

    def from_unit(u: Tensor) -> Tensor:
        return model.flow_input(((u.double() - mean) / std).to(dtype))

    test = model.flow_input(data.to_model(data.test.images)).detach()
    return Subject(
        name=folder.name, kind="run", flow=model.flow.eval(), source=f"{study} run folder {folder} "
        f"(checkpoints/{checkpoint}.pt; {args.coupling} coupling, {args.permutation} permutation)",
        input_shape=tuple(test.shape[1:]), data={f"{args.dataset}-test": test}, from_unit=from_unit,
        unit_note=f"noise sets are unit-range images normalised like the run's data (mean {data.mean[0]:.3g}, "
                  f"std {data.std[0]:.3g})", memory_saving=bool(getattr(args, "mem_saving", False)))


def _y0ast_subject(path: Path) -> Subject:
    from ..loaders import load_y0ast_glow

    try:
        flow = load_y0ast_glow(path)
    except (OSError, KeyError) as exc:
        raise ReportError(f"{path}: not a readable y0ast Glow ({exc})") from exc
    except ValueError as exc:
        raise ReportError(str(exc)) from exc
    return Subject(name="y0ast-glow", kind="y0ast-glow", flow=flow.eval(),
                   source=f"y0ast/Glow-PyTorch Glow {path}", input_shape=tuple(flow.in_shape),
                   from_unit=lambda u: (u - 0.5).float(),
                   unit_note="noise sets are unit-range images shifted to y0ast's input range (x - 0.5)",
                   generative=True)


def _resflow_subject(path: Path) -> Subject:
    from ..loaders import load_resflow

    try:
        flow = load_resflow(path)
    except ValueError as exc:
        raise ReportError(str(exc)) from exc
    return Subject(name=path.stem, kind="rtqichen-resflow", flow=flow.eval(),
                   source=f"rtqichen/residual-flows Residual Flow {path} (training weights)",
                   input_shape=tuple(flow.in_shape), from_unit=lambda u: u.float(),
                   unit_note="noise sets are unit-range images, the Residual Flow's input range", generative=True)


def _state_dict_from(path: Path) -> dict[str, Tensor]:
    """A state dict from our checkpoint (its ``model`` part) or a plain ``torch.save``-d state dict."""
    if not path.is_file():
        raise ReportError(f"--state-dict {path}: no such file")
    try:
        parts = load_checkpoint(path)
    except CheckpointError as exc:
        if "not an invertible checkpoint" not in str(exc):
            raise ReportError(f"--state-dict: {exc}") from exc
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(obj, Mapping) and all(isinstance(v, Tensor) for v in obj.values()):
            return dict(obj)
        raise ReportError(f"--state-dict {path} holds neither one of our checkpoints nor a state dict") from exc
    state = parts["state"]["model"] if "state" in parts else parts.get("model")
    if not isinstance(state, Mapping):
        raise ReportError(f"--state-dict {path} is one of our checkpoints but has no 'model' part "
                          f"(parts: {sorted(parts)})")
    return dict(state)


def _factory_subject(spec: str, state_dict: str | None) -> Subject:
    factory = _resolve(spec, "MODEL")
    if not callable(factory):
        raise ReportError(f"MODEL {spec!r} is a {type(factory).__name__}, not a callable returning a flow")
    made = factory()
    flow, inputs = (made if isinstance(made, tuple) and len(made) == 2 else (made, None))
    if not isinstance(flow, InvertibleModule):
        raise ReportError(f"MODEL {spec!r} returned a {type(flow).__name__}, not an invertible.InvertibleModule; "
                          "wrap it (the layer contract: forward -> (y, logdet), inverse -> (x, logdet_inv))")
    if state_dict is not None:
        try:
            flow.load_state_dict(_state_dict_from(Path(state_dict)))
        except RuntimeError as exc:
            raise ReportError(f"--state-dict {state_dict} does not fit the model of {spec!r}: "
                              f"{str(exc).splitlines()[0]} ...") from exc
    data: dict[str, Tensor] = {}
    shape = getattr(flow, "in_shape", None)
    if inputs is not None:
        if not isinstance(inputs, Tensor) or inputs.dim() < 2:
            raise ReportError(f"MODEL {spec!r} returned inputs that are not a batch tensor (got "
                              f"{type(inputs).__name__})")
        data["factory-data"] = inputs.detach()
        shape = tuple(inputs.shape[1:])
    return Subject(name=spec.rpartition(":")[2], kind="factory", flow=flow.eval(), source=f"factory {spec}",
                   input_shape=None if shape is None else tuple(shape), data=data)


def _looks_like_spec(text: str) -> bool:
    return re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", text) is not None


def load_subject(model: str, *, state_dict: str | None = None, checkpoint: str = "latest") -> Subject:
    """Load what ``model`` names (module docstring); ``state_dict`` only with ``package.module:factory``."""
    path = Path(model)
    if not path.exists() and _looks_like_spec(model):
        if str(Path.cwd()) not in sys.path and "" not in sys.path:
            sys.path.insert(0, str(Path.cwd()))
        return _factory_subject(model, state_dict)
    if state_dict is not None:
        raise ReportError("--state-dict goes with a package.module:factory MODEL; a run folder or checkpoint file "
                          "holds its own weights")
    if not path.exists():
        raise ReportError(f"MODEL {model}: no such file or folder (give a run folder, a checkpoint, a y0ast glow/ "
                          "folder or glow.zip, an rtqichen .pth, or package.module:factory)")
    if path.is_dir():
        if (path / "config.json").is_file():
            return _run_subject(path, checkpoint)
        if (path / "glow_affine_coupling.pt").is_file() or (path / "glow" / "glow_affine_coupling.pt").is_file():
            return _y0ast_subject(path)
        raise ReportError(f"MODEL {model} is a folder without config.json (a run folder) or glow_affine_coupling.pt "
                          "(a y0ast Glow folder)")
    if path.parent.name == "checkpoints" and (path.parent.parent / "config.json").is_file():
        return _run_subject(path.parent.parent, path.stem)
    if path.suffix == ".zip":
        return _y0ast_subject(path)
    return _file_subject(path)


def _file_subject(path: Path) -> Subject:
    from ..loaders import read_torch_file

    try:
        obj = read_torch_file(path).obj
    except ValueError as exc:
        raise ReportError(str(exc)) from exc
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
        raise ReportError(f"{path} is one of our checkpoints outside a run folder: it holds weights only; pass the "
                          "run folder it belongs to, or package.module:factory --state-dict " + str(path))
    if isinstance(obj, Mapping) and "state_dict" in obj:
        return _resflow_subject(path)
    if isinstance(obj, Mapping) and any(str(k).startswith("flow.layers.") for k in obj):
        return _y0ast_subject(path)
    if isinstance(obj, Mapping) and any(str(k).startswith("transforms.") for k in obj):
        return _resflow_subject(path)
    kind = type(obj).__name__ if not isinstance(obj, Mapping) else f"dict with keys {sorted(map(str, obj))[:6]}"
    raise ReportError(f"{path} is not a checkpoint the report knows: it holds a {kind}, neither a run's checkpoint, "
                      "a y0ast Glow state dict nor an rtqichen Residual Flow checkpoint; for a model of your own "
                      "pass package.module:factory --state-dict " + str(path))
