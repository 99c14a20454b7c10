"""The pre-trained CIFAR-10 Residual Flow of rtqichen/residual-flows as our :class:`~invertible.models.ResidualFlow`.

``cifar10_resflow_16-16-16.pth`` is a ``torch.save`` of ``{'state_dict', 'optimizer_state_dict', 'args', 'ema',
'test_bpd'}``, where ``args`` is an ``argparse.Namespace`` and ``ema`` a pickled ``lib.utils.
ExponentialMovingAverage`` (holding the whole model object again) from a package that no longer exists. The file is
read with :func:`~invertible.loaders.safe_pickle.read_torch_file`: an allow-listed unpickler that turns every class
it does not know into an inert placeholder, so no code from the file runs and nothing is imported (see that
module). From what it returns we use tensors and plain values only: ``state_dict``, ``ema.shadow_params`` (a dict of
tensors), the fields of ``args`` and ``test_bpd``.

The architecture is read off the state dict (levels and blocks per level, width, kernel sizes, the fully connected
tail, ActNorms, whether the very first block has a leading activation, the logit layer from the gap it leaves at
index 0, the image size from the ``spatial_dims`` buffers) and cross-checked with ``args`` where it has the field;
what tensors cannot tell (the spectral-norm coefficient, the logit's alpha, the activation if it has no
parameters, the log-det estimator's settings) comes from ``args`` with the release defaults. Keys map one to one:
``transforms.{s}.chain.{j}.X`` is our ``layers.{s}.layers.{j}.X`` (:meth:`ResidualFlow.convert_rtqichen_state_dict`;
ActNorm's ``weight`` is our ``log_scale``; the estimator's own entries ``geom_p``, ``lamb``, ``last_n_samples``,
``last_firmom``, ``last_secmom`` are dropped: the estimator is configured instead, with ``lamb`` as its Poisson rate).

Weights (``weights=``):

- ``"train"``: the state dict as stored, with the stored power-iteration vectors ``u``, ``v`` used as they are and
  no power iteration (what the paper's OOD script evaluates);
- ``"ema"``: the EMA parameters copied in, then the power iteration run to convergence (at most 200 iterations,
  tolerance 1e-3), as residual-flows evaluates its reported bits/dim.

Keep the dtype you want in ``dtype=``: moving the loaded model with ``.to()`` gives its weights new storage, which
the spectral norms take as a weight change and answer with a power iteration that replaces the stored ``u``/``v``.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from ..layers.residual_logdet import LogDetEstimator
from ..layers.spectral_norm import SpectralNormOptions
from ..models import ResidualFlow, resflow_estimator
from .safe_pickle import Placeholder, read_torch_file

__all__ = ["RESFLOW_ARGS", "ResflowCheckpoint", "infer_resflow_config", "load_resflow", "read_resflow_checkpoint",
           "resflow_from_state_dict"]

#: Release defaults of residual-flows' ``train_img.py`` that shape the model (CHECKPOINTS.md section 2.2).
RESFLOW_ARGS: dict[str, Any] = {
    "data": "cifar10", "imagesize": 32, "nbits": 8, "block": "resblock", "coeff": 0.98, "vnorms": "2222",
    "n_lipschitz_iters": None, "sn_tol": 1e-3, "learn_p": False, "n_power_series": None, "factor_out": False,
    "n_dist": "poisson", "n_samples": 1, "n_exact_terms": 2, "act": "swish", "idim": 512, "nblocks": "16-16-16",
    "squeeze_first": False, "actnorm": True, "fc_actnorm": False, "batchnorm": False, "dropout": 0.0, "fc": False,
    "kernels": "3-1-3", "add_noise": True, "quadratic": False, "fc_end": True, "fc_idim": 128, "preact": True,
    "padding": 0, "first_resblock": True, "logit_transform": True,
}
#: Flags whose non-default values this loader cannot build (the value it needs).
_UNSUPPORTED = {"squeeze_first": False, "factor_out": False, "fc": False, "quadratic": False, "batchnorm": False,
                "block": "resblock", "vnorms": "2222", "learn_p": False, "padding": 0, "fc_actnorm": False}
_KEY = re.compile(r"^transforms\.(\d+)\.chain\.(\d+)\.(.+)$")
_ESTIMATOR_ENTRIES = ("geom_p", "lamb", "last_n_samples", "last_firmom", "last_secmom")
LOGIT_ALPHA = 0.05


@dataclass
class ResflowCheckpoint:
    """What a residual-flows checkpoint holds, as plain data.

    Attributes:
        state_dict: the model's state dict (rtqichen's names).
        ema: ``ema.shadow_params`` (parameter name -> tensor), or ``None`` if the file has no EMA.
        args: the training flags found in ``args`` (a dict; empty if the file has none).
        test_bpd: the stored test bits/dim, or ``None``.
        placeholders: the classes the file referenced that were replaced by inert placeholders.
    """

    state_dict: dict[str, Tensor]
    ema: dict[str, Tensor] | None = None
    args: dict[str, Any] = field(default_factory=dict)
    test_bpd: float | None = None
    placeholders: list[str] = field(default_factory=list)


def _tensor_dict(value: Any, what: str) -> dict[str, Tensor]:
    if not isinstance(value, Mapping) or not value or not all(isinstance(v, Tensor) for v in value.values()):
        raise ValueError(f"{what} is not a dict of tensors (found {type(value).__name__})")
    return dict(value)


def read_resflow_checkpoint(path: str | os.PathLike[str]) -> ResflowCheckpoint:
    """Read a residual-flows checkpoint without running code from it (see the module docstring).

    Accepts the published dict (``state_dict``, ``args``, ``ema``, ...), a dict with only ``state_dict``, or a bare
    state dict. Raises ``ValueError`` for anything else.
    """
    loaded = read_torch_file(path)
    obj = loaded.obj
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a residual-flows checkpoint (a dict with "
                         "'state_dict', or a state dict)")
    if "state_dict" in obj:
        state_dict = _tensor_dict(obj["state_dict"], f"{path}: 'state_dict'")
    elif all(isinstance(v, Tensor) for v in obj.values()):
        state_dict = _tensor_dict(obj, str(path))
    else:
        raise ValueError(f"{path} holds a dict with keys {sorted(map(str, obj))[:8]} but no 'state_dict'; it is not "
                         "a residual-flows checkpoint")
    ema = None
    if obj.get("ema") is not None:
        shadow = getattr(obj["ema"], "shadow_params", None)
        if shadow is None and isinstance(obj["ema"], Mapping):
            shadow = obj["ema"].get("shadow_params")
        if shadow is None:
            raise ValueError(f"{path}: 'ema' has no shadow_params ({obj['ema']!r})")
        ema = _tensor_dict(shadow, f"{path}: ema.shadow_params")
    args: dict[str, Any] = {}
    raw = obj.get("args")
    if isinstance(raw, argparse.Namespace):
        args = dict(vars(raw))
    elif isinstance(raw, Mapping):
        args = dict(raw)
    elif raw is not None:
        raise ValueError(f"{path}: 'args' is {raw!r}, not an argparse.Namespace or a dict")
    bpd = obj.get("test_bpd")
    test_bpd = float(bpd) if isinstance(bpd, (int, float)) or (isinstance(bpd, Tensor) and bpd.numel() == 1) \
        else None
    return ResflowCheckpoint(state_dict, ema, args, test_bpd, loaded.placeholders)


def _entries(state_dict: Mapping[str, Tensor]) -> dict[int, dict[int, dict[str, Tensor]]]:
    levels: dict[int, dict[int, dict[str, Tensor]]] = {}
    for key, value in state_dict.items():
        match = _KEY.match(key)
        if match is None:
            raise ValueError(f"unexpected entry {key!r}: a residual-flows ResidualFlow state dict has only "
                             "'transforms.<level>.chain.<index>.<name>' entries")
        s, j, rest = int(match.group(1)), int(match.group(2)), match.group(3)
        levels.setdefault(s, {}).setdefault(j, {})[rest] = value
    if not levels or sorted(levels) != list(range(len(levels))):
        raise ValueError(f"the state dict's levels are {sorted(levels)}; expected 0, 1, ...")
    return levels


def _convs(entry: Mapping[str, Tensor], prefix: str) -> list[Tensor]:
    indices = sorted({int(k[len(prefix):].split(".")[0]) for k in entry
                      if k.startswith(prefix) and k.endswith(".weight")})
    return [entry[f"{prefix}{i}.weight"] for i in indices]


def _arg(args: Mapping[str, Any], name: str) -> Any:
    value = args.get(name, RESFLOW_ARGS.get(name))
    return RESFLOW_ARGS.get(name) if isinstance(value, Placeholder) else value


def infer_resflow_config(state_dict: Mapping[str, Tensor], args: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """:class:`ResidualFlow` keyword arguments for a residual-flows state dict (cross-checked with ``args``).

    Raises ``ValueError`` naming the entry or flag for a state dict of another layout, flags this re-implementation
    does not build (squeeze first, factor out, coupling blocks, ...), or flags that contradict the tensors.
    """
    args = dict(args or {})
    for name, needed in _UNSUPPORTED.items():
        value = _arg(args, name)
        if value is not None and value != needed and not (isinstance(needed, int) and value == float(needed)):
            raise ValueError(f"args.{name} = {value!r}: only residual-flows models with {name} = {needed!r} (its "
                             "CIFAR-10 image model) are supported")
    levels = _entries(state_dict)
    blocks, fc_blocks = [], 0
    conv_block = fc_block = None
    actnorm = False
    for s in range(len(levels)):
        count = 0
        for j, entry in sorted(levels[s].items()):
            if any(k.startswith("nnet.nnet.") for k in entry):
                fc_blocks += 1
                fc_block = fc_block or entry
            elif any(k.startswith("nnet.") for k in entry):
                count += 1
                conv_block = conv_block or entry
            elif any(k.startswith("fc_module.") for k in entry) or {"weight", "bias"} <= set(entry):
                actnorm = True
            else:
                raise ValueError(f"transforms.{s}.chain.{j} has entries {sorted(entry)}, which match no residual-"
                                 "flows layer (iResBlock, ActNorm, FCWrapper)")
        blocks.append(count)
    if conv_block is None:
        raise ValueError("the state dict has no convolutional iResBlock (transforms.N.chain.M.nnet.*)")
    first = levels[0][min(j for j, e in levels[0].items() if any(k.startswith("nnet.") for k in e))]
    first_preact = "nnet.0.weight" not in first
    conv_index = sorted(int(k.split(".")[1]) for k in first if k.startswith("nnet.") and k.endswith(".weight"))
    convs = [first[f"nnet.{i}.weight"] for i in conv_index]
    kernels = [int(w.shape[-1]) for w in convs]
    in_channels, hidden = int(convs[0].shape[1]), int(convs[0].shape[0])
    dims = first.get(f"nnet.{conv_index[0]}.spatial_dims")
    initialized = first.get(f"nnet.{conv_index[0]}.initialized")
    # residual-flows records the input size on a layer's first forward pass; before it, the buffer holds the
    # placeholder [1, 1] and `initialized` is 0, so the size comes from args.imagesize
    if dims is not None and dims.numel() == 2 and (initialized is None or bool(initialized)):
        height, width = (int(v) for v in dims.tolist())
    else:
        height = width = int(_arg(args, "imagesize"))
    fc_hidden = int(_convs(fc_block, "nnet.nnet.")[0].shape[0]) if fc_block is not None else int(_arg(args, "fc_idim"))
    has_beta = any(k.endswith("beta") for k in first)
    activation = "swish" if has_beta else str(_arg(args, "act"))
    if activation == "swish" and not has_beta:
        raise ValueError("args.act says swish but the blocks have no 'beta' entries; pass the right args")
    # the logit layer has no tensors: it shows as the gap at index 0 of the first level
    start = min(levels[0])
    if start > 1:
        raise ValueError(f"transforms.0.chain starts at index {start}; at most one parameter-free layer (the logit "
                         "transform) can precede the first ActNorm or block")
    logit = LOGIT_ALPHA if start == 1 else None
    if _arg(args, "logit_transform") is False and logit is not None:
        raise ValueError("args.logit_transform is False, but transforms.0.chain starts with a parameter-free layer")
    config = {"in_shape": (in_channels, height, width), "blocks": tuple(blocks), "hidden": hidden,
              "kernels": tuple(kernels), "coeff": float(_arg(args, "coeff")), "activation": activation,
              "actnorm": actnorm, "fc_blocks": fc_blocks, "fc_hidden": fc_hidden, "first_preact": first_preact,
              "logit": logit}
    _check_args(config, args)
    return config


def _check_args(config: Mapping[str, Any], args: Mapping[str, Any]) -> None:
    expected = {"nblocks": "-".join(map(str, config["blocks"])), "idim": config["hidden"],
                "kernels": "-".join(map(str, config["kernels"])), "actnorm": config["actnorm"],
                "first_resblock": not config["first_preact"], "fc_end": config["fc_blocks"] > 0,
                "imagesize": config["in_shape"][1]}
    if config["fc_blocks"]:
        expected["fc_idim"] = config["fc_hidden"]
    wrong = [f"{k}: args say {args[k]!r}, the state dict {v!r}" for k, v in expected.items()
             if k in args and not isinstance(args[k], Placeholder) and str(args[k]) != str(v)]
    if wrong:
        raise ValueError("the checkpoint's args contradict its state dict:\n  " + "\n  ".join(wrong))


def _estimator(state_dict: Mapping[str, Tensor], args: Mapping[str, Any]) -> LogDetEstimator:
    lamb = next((float(v) for k, v in state_dict.items() if k.endswith(".lamb")), 2.0)
    terms = _arg(args, "n_power_series")
    if terms is not None:
        return LogDetEstimator("series", n_terms=int(terms), neumann_grad=True)
    dist = str(_arg(args, "n_dist"))
    extra = {"rate": lamb} if dist == "poisson" else {"dist": "geometric", "p": 0.5}
    return resflow_estimator(n_exact_terms=int(_arg(args, "n_exact_terms")), n_samples=int(_arg(args, "n_samples")),
                             **extra)


def _our_name(model: ResidualFlow, key: str) -> str | None:
    converted = model.convert_rtqichen_state_dict({key: torch.zeros(())})
    return next(iter(converted)) if converted else None  # None: an estimator entry, dropped on purpose


def _their_name(model: ResidualFlow, key: str) -> str:
    """residual-flows' name of our state-dict entry ``key`` (for error messages)."""
    starts = getattr(model, "level_starts", None)
    match = re.match(r"^layers\.(\d+)\.(.*)$", key)
    if starts is None or match is None:
        return key
    index, rest = int(match.group(1)), match.group(2)
    level = max(s for s in range(len(starts) - 1) if starts[s] <= index)
    rest = re.sub(r"(^|\.)log_scale$", r"\1weight", rest)
    return f"transforms.{level}.chain.{index - starts[level]}.{rest}"


def resflow_from_state_dict(state_dict: Mapping[str, Tensor], *, args: Mapping[str, Any] | None = None,
                            ema: Mapping[str, Tensor] | None = None, weights: str = "train",
                            dtype: torch.dtype = torch.float32, logdet: str | LogDetEstimator | None = None,
                            **model_args: Any) -> ResidualFlow:
    """Our ResidualFlow with the weights of a residual-flows state dict, in eval mode (see the module docstring).

    ``model_args`` override :class:`ResidualFlow` arguments (e.g. ``on_failure="return"`` for the inverse).
    """
    if weights not in ("train", "ema"):
        raise ValueError(f"weights must be 'train' or 'ema', got {weights!r}")
    if weights == "ema" and ema is None:
        raise ValueError("weights='ema' needs the checkpoint's EMA parameters, and this one has none")
    args = dict(args or {})
    config = infer_resflow_config(state_dict, args)
    sn_tol = float(_arg(args, "sn_tol"))
    spectral = SpectralNormOptions(coeff=config["coeff"], atol=sn_tol, rtol=sn_tol)
    settings = {**{k: v for k, v in config.items() if k != "coeff"}, "spectral": spectral,
                "logdet": logdet if logdet is not None else _estimator(state_dict, args), **model_args}
    model = ResidualFlow(**settings).to(dtype)
    converted = model.convert_rtqichen_state_dict(dict(state_dict))
    own = model.state_dict()
    if set(own) != set(converted):
        missing = sorted(_their_name(model, k) for k in set(own) - set(converted))
        unexpected = sorted(k for k in state_dict if (name := _our_name(model, k)) is not None and name not in own)
        raise ValueError("the state dict does not match the architecture it describes: "
                         f"missing {missing[:6]}{'...' if len(missing) > 6 else ''}, unexpected "
                         f"{unexpected[:6]}{'...' if len(unexpected) > 6 else ''}")
    model.load_state_dict(converted, strict=True)
    if weights == "ema":
        assert ema is not None
        shadow = model.convert_rtqichen_state_dict({k: v for k, v in ema.items()
                                                    if k.rpartition(".")[2] not in _ESTIMATOR_ENTRIES})
        params = dict(model.named_parameters())
        if set(shadow) != set(params):
            raise ValueError(f"the EMA parameters do not match the model's: missing "
                             f"{sorted(set(params) - set(shadow))[:6]}, unexpected "
                             f"{sorted(set(shadow) - set(params))[:6]}")
        with torch.no_grad():
            for name, value in shadow.items():
                if value.shape != params[name].shape:
                    raise ValueError(f"EMA parameter {name} has shape {tuple(value.shape)}, the model "
                                     f"{tuple(params[name].shape)}")
                params[name].copy_(value)
        model.update_lipschitz(max_iter=200)
    return model.eval()


def load_resflow(path: str | os.PathLike[str], *, weights: str = "train", dtype: torch.dtype = torch.float32,
                 logdet: str | LogDetEstimator | None = None, **model_args: Any) -> ResidualFlow:
    """rtqichen/residual-flows' pre-trained Residual Flow as our :class:`~invertible.models.ResidualFlow`.

    Args:
        path: ``cifar10_resflow_16-16-16.pth`` (or any residual-flows image checkpoint of that layout).
        weights: ``"train"`` (stored weights and power-iteration vectors, the paper's OOD script) or ``"ema"``
            (EMA weights, power iteration to convergence, residual-flows' evaluation).
        dtype: dtype of the returned model (do not ``.to()`` it afterwards; see the module docstring).
        logdet: the blocks' log-det estimator; default: residual-flows' (Poisson roulette with the file's rate,
            20 exact terms in eval mode, one Gaussian probe), ``"exact"`` for brute force on small images.
        model_args: further :class:`ResidualFlow` arguments, e.g. ``on_failure="return"``.

    The model takes images in ``[0, 1]`` (``ToTensor``; dequantised ``(255 x + u) / 256`` in training) and returns
    ``z`` of shape ``(48, 8, 8)`` for CIFAR-10. Its :meth:`~invertible.models.Flow.log_prob` includes the logit
    transform's log-det, so it is the density of ``[0, 1]`` images, and ``model.bits_per_dim(x, levels=256)`` is
    residual-flows' bits/dim of dequantised ``x``.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"no such file: {path}")
    ckpt = read_resflow_checkpoint(path)
    return resflow_from_state_dict(ckpt.state_dict, args=ckpt.args, ema=ckpt.ema, weights=weights, dtype=dtype,
                                   logdet=logdet, **model_args)
