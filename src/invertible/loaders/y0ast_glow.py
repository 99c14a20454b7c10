"""The pre-trained CIFAR-10 Glow of y0ast/Glow-PyTorch as our :class:`~invertible.models.Glow`.

The published ``glow.zip`` holds ``glow/glow_affine_coupling.pt`` (a plain state dict of tensors, 2019 legacy
format) and ``glow/hparams.json`` (``vars(args)`` of its ``train.py``). :func:`load_y0ast_glow` reads both, infers
the architecture from the state-dict keys (levels from the ``Split2d`` entries, steps per level, width, coupling,
1x1 convolution, learned top prior, image size from ``prior_h``), cross-checks it against the JSON, and copies every
tensor into our Glow, which then computes exactly the original's functions:

- input ``x`` in ``[-0.5, 0.5)``: :func:`y0ast_preprocess` maps 8-bit images (uint8, or ``ToTensor`` floats) there
  as y0ast's ``preprocess`` does (``x * 255 / 256 - 0.5``);
- log-likelihood: ``model.log_prob(x)`` is y0ast's objective without the dequantisation term (ActNorm, 1x1 conv
  and coupling log-dets, the split priors ``N(mean(z1), exp(logs(z1)))`` and the learned top prior), so
  :func:`y0ast_bits_per_dim` with ``dequantize=True`` is y0ast's bits/dim (uniform noise of width 1/256 and the
  ``-D log 256`` term; the caller's tensor is not modified), and with ``dequantize=False`` the number the paper's
  modified copy returns (no noise, no correction term);
- reconstruction: ``model.inverse(model(x)[0])`` carries every split latent in ``z``, so it is the paper's exact
  reconstruction through the stored split latents (upstream y0ast *samples* them instead);
  :func:`y0ast_latents`/:func:`y0ast_reverse` give and take the latents in y0ast's own layout (top ``z`` and the
  list of ``z2`` of each split), sampling a split latent from its learned prior only where none is given.

How the modules map (level ``l``, step ``k``; ``K`` steps per level): y0ast's ``flow.layers.{l(K+2)+1+k}`` is one
step, ``ActNorm -> 1x1 conv -> coupling``, whose ``actnorm.{bias,logs}`` (shape (1,C,1,1)) become our ActNorm's
``bias``/``log_scale``, ``invconv.{p,lower,upper,log_s,sign_s}`` our LU convolution's ``perm,lower,upper,log_s,
sign_s`` (or ``invconv.weight`` the dense ``weight``), and ``block.{0,2,4}`` the coupling network's convolutions and
ActNorms (``block.4`` is the zero-initialised output convolution, scale ``exp(3 logs)``). ``flow.layers.{l(K+2)+K+1}
.conv`` is the learned prior of our :class:`~invertible.Split`. The top prior ``learn_top_fn(prior_h)`` with the
all-zero ``prior_h`` is a constant per channel, ``h = bias * exp(3 logs)``, mean ``h[:C]`` and log-std ``h[C:]``;
it becomes the final ActNorm ``(z - mean) exp(-logs)`` of our Glow's ``learn_top``.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from ..base import allow_nonfinite
from ..layers import ActNorm, AdditiveCoupling, AffineCoupling, Invertible1x1Conv, Partial, Permutation, Split, Squeeze
from ..models import Glow, bits_per_dim

__all__ = [
    "Y0astArchitecture",
    "infer_y0ast_architecture",
    "load_y0ast_glow",
    "read_y0ast_folder",
    "y0ast_bits_per_dim",
    "y0ast_glow_from_state_dict",
    "y0ast_latents",
    "y0ast_postprocess",
    "y0ast_preprocess",
    "y0ast_reverse",
]

STATE_DICT_FILE = "glow_affine_coupling.pt"
HPARAMS_FILE = "hparams.json"
#: Image shapes of the data sets y0ast's train.py knows (for the hparams cross-check).
DATASET_SHAPES = {"cifar10": (3, 32, 32), "svhn": (3, 32, 32)}
_SPLIT_KEY = re.compile(r"^flow\.layers\.(\d+)\.conv\.conv\.weight$")
_STEP_KEY = re.compile(r"^flow\.layers\.(\d+)\.actnorm\.bias$")


@dataclass(frozen=True)
class Y0astArchitecture:
    """The architecture a y0ast Glow state dict describes (see :func:`infer_y0ast_architecture`)."""

    in_shape: tuple[int, int, int]
    levels: int
    depth: int
    hidden: int
    coupling: str  # "affine" or "additive"
    permutation: str  # "lu", "conv" (dense invconv), "reverse", "shuffle"
    learn_top: bool

    def step_index(self, level: int, step: int) -> int:
        """Index in ``flow.layers`` of step ``step`` of level ``level``."""
        return level * (self.depth + 2) + 1 + step

    def split_index(self, level: int) -> int:
        """Index in ``flow.layers`` of the split after level ``level``."""
        return level * (self.depth + 2) + self.depth + 1


def _shape(sd: Mapping[str, Tensor], key: str) -> tuple[int, ...]:
    if key not in sd:
        raise ValueError(f"the state dict lacks {key!r}; it is not a y0ast/Glow-PyTorch Glow state dict")
    return tuple(sd[key].shape)


def infer_y0ast_architecture(state_dict: Mapping[str, Tensor], hparams: Mapping[str, Any] | None = None
                             ) -> Y0astArchitecture:
    """Read the architecture off the state-dict keys and shapes; cross-check it with ``hparams`` if given.

    Raises ``ValueError`` (naming the key or the hparams field) for a state dict of another layout, a class-
    conditional model (``y_condition``), a shuffle permutation (its indices were never saved, so it cannot be
    restored), or hparams that contradict the tensors.
    """
    sd = state_dict
    if not isinstance(sd, Mapping) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise ValueError("a y0ast Glow checkpoint is a plain state dict (name -> tensor); got "
                         f"{type(sd).__name__}" + (f" with keys {list(sd)[:5]}" if isinstance(sd, Mapping) else ""))
    if any(k.startswith(("project_ycond.", "project_class.")) for k in sd):
        raise ValueError("this Glow is class-conditional (y_condition: project_ycond/project_class entries); only "
                         "unconditional models are supported")
    splits = sorted(int(m.group(1)) for k in sd if (m := _SPLIT_KEY.match(k)))
    steps = sorted(int(m.group(1)) for k in sd if (m := _STEP_KEY.match(k)))
    if not steps:
        raise ValueError("the state dict has no 'flow.layers.N.actnorm.bias' entries; it is not a y0ast/Glow-PyTorch "
                         f"Glow state dict (first keys: {list(sd)[:5]})")
    levels = len(splits) + 1
    depth = sum(1 for s in steps if not splits or s < splits[0])
    arch_steps = [lvl * (depth + 2) + 1 + k for lvl in range(levels) for k in range(depth)]
    arch_splits = [lvl * (depth + 2) + depth + 1 for lvl in range(levels - 1)]
    if steps != arch_steps or splits != arch_splits:
        raise ValueError(f"flow.layers holds steps at {steps[:4]}... and splits at {splits}, which is not the layout "
                         f"of L={levels} levels of K={depth} steps (squeeze, K steps, split)")
    c0 = _shape(sd, "flow.layers.1.actnorm.bias")[1]
    if c0 % 4:
        raise ValueError(f"flow.layers.1 has {c0} channels, not a multiple of 4 (a squeezed image)")
    prior = _shape(sd, "prior_h")
    if len(prior) != 4:
        raise ValueError(f"prior_h should have shape (1, 2C, H, W), found {prior}")
    side = (prior[2] * 2**levels, prior[3] * 2**levels)
    hidden = _shape(sd, "flow.layers.1.block.0.conv.weight")[0]
    out = _shape(sd, "flow.layers.1.block.4.conv.weight")[0]
    coupling = "affine" if out == c0 else "additive" if out == c0 // 2 else None
    if coupling is None:
        raise ValueError(f"flow.layers.1.block.4.conv.weight has {out} outputs for {c0} channels: neither affine "
                         f"({c0}) nor additive ({c0 // 2})")
    flow_permutation = str((hparams or {}).get("flow_permutation", ""))
    if "flow.layers.1.invconv.lower" in sd:
        permutation = "lu"
    elif "flow.layers.1.invconv.weight" in sd:
        permutation = "conv"
    elif flow_permutation in ("reverse", "shuffle"):
        permutation = flow_permutation
    else:
        raise ValueError("the steps have no invconv entries, so the channel permutation is a shuffle or a reversal, "
                         "which store no tensors; hparams.json must say which (flow_permutation)")
    if permutation == "shuffle":
        raise ValueError("this Glow uses a random channel shuffle (flow_permutation 'shuffle'), whose indices were "
                         "never saved; it cannot be restored")
    arch = Y0astArchitecture((c0 // 4, *side), levels, depth, hidden, coupling, permutation,
                             "learn_top_fn.conv.weight" in sd)
    if hparams:
        _check_hparams(arch, hparams)
    return arch


def _check_hparams(arch: Y0astArchitecture, hp: Mapping[str, Any]) -> None:
    expected = {"L": arch.levels, "K": arch.depth, "hidden_channels": arch.hidden, "flow_coupling": arch.coupling,
                "learn_top": arch.learn_top, "y_condition": False}
    if arch.permutation in ("lu", "conv"):
        expected.update(flow_permutation="invconv", LU_decomposed=arch.permutation == "lu")
    else:
        expected["flow_permutation"] = arch.permutation
    wrong = [f"{k}: hparams.json says {hp[k]!r}, the state dict {v!r}" for k, v in expected.items()
             if k in hp and hp[k] != v]
    shape = DATASET_SHAPES.get(str(hp.get("dataset", "")).lower())
    if shape is not None and shape != arch.in_shape:
        wrong.append(f"dataset: hparams.json says {hp['dataset']!r} ({shape}), the state dict {arch.in_shape}")
    if wrong:
        raise ValueError("hparams.json contradicts the state dict:\n  " + "\n  ".join(wrong))


def _own_modules(model: Glow) -> list[tuple[str, nn.Module]]:
    return [(f"layers.{i}.layer.", m.layer) if isinstance(m, Partial) else (f"layers.{i}.", m)
            for i, m in enumerate(model.layers)]


class _Mapper:
    """Builds our state dict from y0ast's, checking shapes and remembering which entries were used."""

    def __init__(self, source: Mapping[str, Tensor], target: dict[str, Tensor]) -> None:
        self.source, self.target, self.used = source, target, set()

    def take(self, key: str, shape: tuple[int, ...] | torch.Size) -> Tensor:
        if key not in self.source:
            raise ValueError(f"the state dict lacks {key!r}; it does not match the layout inferred from its other "
                             "entries")
        value = self.source[key]
        if value.numel() != math.prod(shape):
            raise ValueError(f"{key} has shape {tuple(value.shape)}, but this architecture needs {tuple(shape)}")
        self.used.add(key)
        return value.reshape(shape)

    def put(self, ours: str, key: str) -> None:
        self.target[ours] = self.take(key, self.target[ours].shape)

    def actnorm(self, prefix: str, key: str) -> None:
        self.put(prefix + "bias", key + ".bias")
        self.put(prefix + "log_scale", key + ".logs")
        self.target[prefix + "initialized"] = torch.tensor(True)


def y0ast_glow_from_state_dict(state_dict: Mapping[str, Tensor], hparams: Mapping[str, Any] | None = None, *,
                               dtype: torch.dtype = torch.float32) -> Glow:
    """Our Glow with the weights of a y0ast state dict (architecture inferred, hparams cross-checked), in eval mode."""
    arch = infer_y0ast_architecture(state_dict, hparams)
    model = Glow(arch.in_shape, levels=arch.levels, depth=arch.depth, hidden=arch.hidden, coupling=arch.coupling,
                 permutation=arch.permutation, learn_top=arch.learn_top, net_actnorm=True, zero_init=True,
                 **({"scale_fn": "sigmoid", "shift": 2.0, "order": "glow"} if arch.coupling == "affine" else {}))
    model = model.to(dtype)
    target = model.state_dict()
    m = _Mapper(state_dict, target)
    modules = iter(_own_modules(model))
    for level in range(arch.levels):
        prefix, module = next(modules)
        assert isinstance(module, Squeeze)
        for k in range(arch.depth):
            src = f"flow.layers.{arch.step_index(level, k)}"
            prefix, module = next(modules)
            assert isinstance(module, ActNorm)
            m.actnorm(prefix, f"{src}.actnorm")
            prefix, module = next(modules)
            if isinstance(module, Invertible1x1Conv) and module.lu:
                for ours, theirs in (("perm", "p"), ("lower", "lower"), ("upper", "upper"), ("log_s", "log_s"),
                                     ("sign_s", "sign_s")):
                    m.put(prefix + ours, f"{src}.invconv.{theirs}")
            elif isinstance(module, Invertible1x1Conv):
                m.put(prefix + "weight", f"{src}.invconv.weight")
            else:
                assert isinstance(module, Permutation)
            prefix, module = next(modules)
            assert isinstance(module, (AffineCoupling, AdditiveCoupling))
            m.put(prefix + "net.0.weight", f"{src}.block.0.conv.weight")
            m.actnorm(prefix + "net.1.actnorm.", f"{src}.block.0.actnorm")
            m.put(prefix + "net.3.weight", f"{src}.block.2.conv.weight")
            m.actnorm(prefix + "net.4.actnorm.", f"{src}.block.2.actnorm")
            m.put(prefix + "net.6.conv.weight", f"{src}.block.4.conv.weight")
            m.put(prefix + "net.6.conv.bias", f"{src}.block.4.conv.bias")
            m.put(prefix + "net.6.logs", f"{src}.block.4.logs")
        if level < arch.levels - 1:
            prefix, module = next(modules)
            assert isinstance(module, Split)
            src = f"flow.layers.{arch.split_index(level)}.conv"
            m.put(prefix + "prior.conv.weight", f"{src}.conv.weight")
            m.put(prefix + "prior.conv.bias", f"{src}.conv.bias")
            m.put(prefix + "prior.logs", f"{src}.logs")
    prior_h = m.take("prior_h", state_dict["prior_h"].shape)
    if arch.learn_top:
        prefix, module = next(modules)
        assert isinstance(module, ActNorm)
        if bool(prior_h.ne(0).any()):
            raise ValueError("prior_h is not all zeros, so the learned top prior would vary over the image; only the "
                             "published layout (a zero buffer) is supported")
        channels = module.channels
        bias = m.take("learn_top_fn.conv.bias", (2 * channels,)).double()
        logs = m.take("learn_top_fn.logs", (2 * channels,)).double()
        m.take("learn_top_fn.conv.weight", state_dict["learn_top_fn.conv.weight"].shape)  # meets only zeros
        h = bias * torch.exp(3.0 * logs)  # learn_top_fn(0): the bias, scaled as every Conv2dZeros output
        target[prefix + "bias"] = -h[:channels]
        target[prefix + "log_scale"] = -h[channels:]
        target[prefix + "initialized"] = torch.tensor(True)
    unused = sorted(set(state_dict) - m.used)
    if unused:
        raise ValueError(f"the state dict has entries this architecture does not use: {unused[:8]}"
                         + (f" and {len(unused) - 8} more" if len(unused) > 8 else ""))
    model.load_state_dict(target, strict=True)
    return model.eval()


def _is_glow_zip(path: Path) -> bool:
    """Whether ``path`` is an archive that holds the y0ast files (``glow.zip``), not a zip-format torch file."""
    if not (path.is_file() and zipfile.is_zipfile(path)):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n == STATE_DICT_FILE or n.endswith("/" + STATE_DICT_FILE) for n in names) or not any(
        n.endswith("data.pkl") for n in names)


def _read_member(folder: Path, name: str) -> bytes | None:
    """``name`` from ``folder`` (a folder, or a ``glow.zip`` holding ``glow/<name>``); None if absent."""
    if folder.is_file() and zipfile.is_zipfile(folder):
        with zipfile.ZipFile(folder) as archive:
            matches = [n for n in archive.namelist() if n == name or n.endswith("/" + name)]
            return archive.read(matches[0]) if matches else None
    path = folder / name
    return path.read_bytes() if path.is_file() else None


def read_y0ast_folder(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict[str, Any] | None]:
    """The state dict and hparams (``None`` if absent) of a y0ast folder, its ``.pt`` file, or ``glow.zip``.

    The state dict is read with ``torch.load(weights_only=True)``: the file is plain tensors, so no code runs.
    The ``.pt`` file may be in the 2019 legacy format (as published) or in torch's zip format (re-saved).
    Raises ``FileNotFoundError`` (nothing at ``path``, or no state dict in the folder or archive) and
    ``ValueError`` (a file that is not a readable plain state dict; the message says why).
    """
    path = Path(path)
    if path.is_file() and not _is_glow_zip(path):  # the .pt file itself
        folder, weights = path.parent, path.read_bytes()
    elif path.exists():
        folder = path
        weights = _read_member(folder, STATE_DICT_FILE)
        if weights is None:
            raise FileNotFoundError(f"{path} holds no {STATE_DICT_FILE}; pass the unzipped glow/ folder of y0ast's "
                                    "glow.zip (or the zip, or the .pt file)")
    else:
        raise FileNotFoundError(f"no such file or folder: {path}")
    if not weights:
        raise ValueError(f"{path}: the state dict file is empty (0 bytes), probably an interrupted download or "
                         "copy; fetch glow.zip again")
    try:
        state_dict = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "global" not in str(exc).lower():  # not a refused global: a damaged or foreign file
            raise ValueError(f"{path}: the state dict file cannot be read (torch's unpickler stopped at an "
                             "operation it does not know); it is damaged (fetch glow.zip again) or not a file "
                             "written by torch.save") from exc
        # weights_only refused a global: the file holds more than tensors
        raise ValueError(f"{path}: the state dict file holds objects other than tensors, so it is not y0ast's "
                         "plain state dict (nothing from it was run); pass glow_affine_coupling.pt from glow.zip"
                         ) from exc
    except Exception as exc:  # noqa: BLE001 - any other failure: damaged or not a torch file
        detail = str(exc).strip().splitlines()
        raise ValueError(f"{path}: the state dict file cannot be read ({type(exc).__name__}"
                         f"{': ' + detail[0] if detail else ''}); it is truncated or damaged (fetch glow.zip "
                         "again) or not a file written by torch.save") from exc
    raw = _read_member(folder, HPARAMS_FILE)
    hparams = None
    if raw is not None:
        try:
            hparams = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: {HPARAMS_FILE} is not valid JSON ({exc})") from exc
    return dict(state_dict) if isinstance(state_dict, Mapping) else state_dict, hparams


def load_y0ast_glow(path: str | os.PathLike[str], *, dtype: torch.dtype = torch.float32,
                    check_hparams: bool = True) -> Glow:
    """y0ast/Glow-PyTorch's pre-trained Glow as our :class:`~invertible.models.Glow` (eval mode, every ActNorm
    initialised).

    Args:
        path: the unzipped ``glow/`` folder (``glow_affine_coupling.pt`` and ``hparams.json``), the ``.pt`` file,
            or ``glow.zip`` itself.
        dtype: dtype of the returned model.
        check_hparams: cross-check the inferred architecture against ``hparams.json`` (a missing file warns).

    The model takes ``x`` in ``[-0.5, 0.5)`` (:func:`y0ast_preprocess`); see the module docstring for the
    likelihood and reconstruction it computes.
    """
    state_dict, hparams = read_y0ast_folder(path)
    if hparams is None and check_hparams:
        warnings.warn(f"{path}: no {HPARAMS_FILE}; the architecture is inferred from the state dict alone",
                      stacklevel=2)
    return y0ast_glow_from_state_dict(state_dict, hparams if check_hparams else None, dtype=dtype)


# ----------------------------------------------------------------------------------------------------------------
# Data conversions and y0ast's interface
# ----------------------------------------------------------------------------------------------------------------
def y0ast_preprocess(images: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """8-bit images to y0ast's input range: ``k / 256 - 0.5`` for uint8 ``k``, ``t * 255 / 256 - 0.5`` for
    ``ToTensor`` floats ``t = k / 255``.

    Example:
        >>> y0ast_preprocess(torch.tensor([0, 255], dtype=torch.uint8))
        tensor([-0.5000,  0.4961])
    """
    x = images.to(dtype) if images.dtype == torch.uint8 else images.to(dtype) * 255
    return x / 256 - 0.5


def y0ast_postprocess(x: Tensor) -> Tensor:
    """y0ast's ``postprocess``: clamp to ``[-0.5, 0.5]``, then ``(x + 0.5) * 256`` clamped to ``0..255`` as uint8."""
    return ((x.clamp(-0.5, 0.5) + 0.5) * 256).clamp(0, 255).to(torch.uint8)


def y0ast_bits_per_dim(model: Glow, x: Tensor, *, dequantize: bool = True,
                       generator: torch.Generator | None = None) -> Tensor:
    """Bits per dimension per image as y0ast computes them (``x`` in ``[-0.5, 0.5)``).

    ``dequantize=True``: y0ast's ``uniform_binning_correction``, ``x + U(0, 1/256)`` (noise drawn as
    ``torch.rand(x.shape, generator=generator) / 256``; ``x`` itself is not changed) and the ``-D log 256`` term.
    ``dequantize=False``: the paper's modified copy, no noise and no term (about 8 bits lower).
    """
    if dequantize:
        noise = torch.rand(x.shape, generator=generator, dtype=x.dtype, device="cpu").to(x.device)
        x = x + noise / 256
    return bits_per_dim(model.log_prob(x), x[0].numel(), 256 if dequantize else None)


def _steps(model: Glow) -> tuple[list[nn.Module], nn.Module | None]:
    layers = [m.layer if isinstance(m, Partial) else m for m in model.layers]
    top = layers[-1] if isinstance(layers[-1], ActNorm) else None  # a step always ends with a coupling
    return (layers[:-1] if top is not None else layers), top


def y0ast_latents(model: Glow, x: Tensor) -> tuple[Tensor, list[Tensor]]:
    """y0ast's latents of ``x``: the top ``z`` (before the top prior) and the ``z2`` each split factors out, in
    forward order (the paper's ``zn`` list, popped last-first by its reverse)."""
    splits: list[Tensor] = []
    h = x
    with allow_nonfinite():
        for layer in _steps(model)[0]:
            if isinstance(layer, Split):
                splits.append(h[:, layer.kept:])
                h = h[:, :layer.kept]
            else:
                h = layer(h)[0]
    return h, splits


def y0ast_reverse(model: Glow, z: Tensor, split_latents: list[Tensor] | None = None, *, temperature: float = 1.0,
                  generator: torch.Generator | None = None) -> Tensor:
    """y0ast's reverse: ``x`` from the top ``z`` and the split latents of :func:`y0ast_latents`.

    Where ``split_latents`` is ``None`` each split latent is drawn from its learned prior,
    ``N(mean(z1), (exp(logs(z1)) * temperature)^2)``, as upstream y0ast does.
    """
    stored = list(split_latents) if split_latents is not None else None
    h = z
    with allow_nonfinite():
        for layer in reversed(_steps(model)[0]):
            if isinstance(layer, Split):
                if stored is not None:
                    if not stored:
                        raise ValueError("fewer split latents than splits in the model")
                    z2 = stored.pop()
                    h = torch.cat([h, z2], dim=1)
                else:
                    shape = (h.shape[0], layer.channels - layer.kept, *h.shape[2:])
                    eps = torch.randn(shape, generator=generator, dtype=h.dtype, device="cpu").to(h.device)
                    h = layer.inverse(torch.cat([h, eps * temperature], dim=1))[0]
            else:
                h = layer.inverse(h)[0]
    if stored:
        raise ValueError(f"{len(stored)} split latents were left over; the model has fewer splits")
    return h
