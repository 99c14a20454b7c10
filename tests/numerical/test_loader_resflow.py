"""load_resflow against an independent re-implementation of rtqichen/residual-flows' image ResidualFlow.

The reference below is written here from CHECKPOINTS.md section 2 (module tree, state-dict names, shapes and
dtypes, spectral normalisation from stored ``u``/``v``, ActNorm, logit, squeeze, the fixed-point inverse); it shares
no code with ``invertible``. The synthetic checkpoint has the published structure: a legacy-format ``torch.save``
of ``state_dict``, ``optimizer_state_dict``, ``args`` (an ``argparse.Namespace`` with the release fields),
``ema`` (an object of a class ``lib.utils.ExponentialMovingAverage`` holding the model object, itself of class
``lib.iresnet.ResidualFlow``) and ``test_bpd``. Those classes live in throw-away modules that exist only while
saving, so reading the file back meets the same missing package as the real one.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import types
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invertible.loaders import infer_resflow_config, load_resflow, read_resflow_checkpoint
from invertible.loaders.rtqichen_resflow import RESFLOW_ARGS

LOG2PI = math.log(2 * math.pi)
COEFF = 0.98


# --------------------------------------------------------------------------------------------------------------
# Reference: residual-flows' module tree and math, names as in the published state dict
# --------------------------------------------------------------------------------------------------------------
class LogitTransform(nn.Module):
    def __init__(self, alpha: float) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        s = self.alpha + (1 - 2 * self.alpha) * x
        y = torch.log(s) - torch.log(1 - s)
        return y, (-torch.log(s - s * s) + math.log(1 - 2 * self.alpha)).flatten(1).sum(1)

    def inverse(self, y: Tensor) -> Tensor:
        return (torch.sigmoid(y) - self.alpha) / (1 - 2 * self.alpha)


class ActNormNd(nn.Module):
    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("initialized", torch.tensor(0))

    def _view(self, p: Tensor, x: Tensor) -> Tensor:
        return p.view(1, -1, *([1] * (x.dim() - 2)))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if not bool(self.initialized):  # data-dependent: mean and unbiased variance, floored at 0.2
            with torch.no_grad():
                flat = x.transpose(0, 1).reshape(x.shape[1], -1)
                self.bias.copy_(-flat.mean(1))
                self.weight.copy_(-0.5 * torch.log(flat.var(1).clamp_min(0.2)))
                self.initialized.fill_(1)
        y = (x + self._view(self.bias, x)) * torch.exp(self._view(self.weight, x))
        positions = x[0, 0].numel() if x.dim() > 2 else 1
        return y, (self.weight.sum() * positions).expand(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        return y * torch.exp(-self._view(self.weight, y)) - self._view(self.bias, y)


class ActNorm2d(ActNormNd):
    pass


class ActNorm1d(ActNormNd):
    pass


class Swish(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.beta = nn.Parameter(torch.tensor([0.5]))

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(x * F.softplus(self.beta)) / 1.1


class InducedNormConv2d(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, size: int, g: torch.Generator) -> None:
        super().__init__()
        self.kernel, self.size = kernel, size
        fan_in = c_in * kernel * kernel
        self.weight = nn.Parameter(2.0 * torch.randn(c_out, c_in, kernel, kernel, generator=g) / math.sqrt(fan_in))
        self.bias = nn.Parameter(0.1 * torch.randn(c_out, generator=g))
        self.register_buffer("initialized", torch.tensor(0))
        self.register_buffer("spatial_dims", torch.tensor([1.0, 1.0]))
        self.register_buffer("scale", torch.tensor(0.0))
        n_u, n_v = (c_out, c_in) if kernel == 1 else (c_out * size * size, c_in * size * size)
        self.register_buffer("u", F.normalize(torch.randn(n_u, generator=g), dim=0))
        self.register_buffer("v", F.normalize(torch.randn(n_v, generator=g), dim=0))

    def op(self, w: Tensor, v: Tensor) -> Tensor:
        if self.kernel == 1:
            return w.view(w.shape[0], -1) @ v
        return F.conv2d(v.view(1, w.shape[1], self.size, self.size), w, padding=self.kernel // 2).reshape(-1)

    def adjoint(self, w: Tensor, u: Tensor) -> Tensor:
        if self.kernel == 1:
            return w.view(w.shape[0], -1).T @ u
        return F.conv_transpose2d(u.view(1, w.shape[0], self.size, self.size), w, padding=self.kernel // 2).reshape(-1)

    @torch.no_grad()
    def power_iteration(self, n: int) -> None:
        for _ in range(n):
            self.u.copy_(F.normalize(self.op(self.weight, self.v), dim=0))
            self.v.copy_(F.normalize(self.adjoint(self.weight, self.u), dim=0))
        self.scale.fill_(float(torch.dot(self.u, self.op(self.weight, self.v))))
        self.spatial_dims.copy_(torch.tensor([float(self.size)] * 2))
        self.initialized.fill_(1)

    def forward(self, x: Tensor) -> Tensor:
        sigma = torch.dot(self.u, self.op(self.weight, self.v))
        w = self.weight / torch.clamp(sigma / COEFF, min=1.0)
        return F.conv2d(x, w, self.bias, padding=self.kernel // 2)


class InducedNormLinear(nn.Module):
    def __init__(self, d_in: int, d_out: int, g: torch.Generator) -> None:
        super().__init__()
        self.weight = nn.Parameter(2.0 * torch.randn(d_out, d_in, generator=g) / math.sqrt(d_in))
        self.bias = nn.Parameter(0.1 * torch.randn(d_out, generator=g))
        self.register_buffer("scale", torch.tensor(0.0))
        self.register_buffer("u", F.normalize(torch.randn(d_out, generator=g), dim=0))
        self.register_buffer("v", F.normalize(torch.randn(d_in, generator=g), dim=0))

    @torch.no_grad()
    def power_iteration(self, n: int) -> None:
        for _ in range(n):
            self.u.copy_(F.normalize(self.weight @ self.v, dim=0))
            self.v.copy_(F.normalize(self.weight.T @ self.u, dim=0))
        self.scale.fill_(float(torch.dot(self.u, self.weight @ self.v)))

    def forward(self, x: Tensor) -> Tensor:
        sigma = torch.dot(self.u, self.weight @ self.v)
        return F.linear(x, self.weight / torch.clamp(sigma / COEFF, min=1.0), self.bias)


class FCNet(nn.Module):
    def __init__(self, dim: int, hidden: int, g: torch.Generator) -> None:
        super().__init__()
        self.nnet = nn.Sequential(Swish(), InducedNormLinear(dim, hidden, g), Swish(),
                                  InducedNormLinear(hidden, hidden, g), Swish(), InducedNormLinear(hidden, dim, g))

    def forward(self, x: Tensor) -> Tensor:
        return self.nnet(x.flatten(1)).view_as(x)


class iResBlock(nn.Module):  # noqa: N801 - residual-flows' name
    def __init__(self, nnet: nn.Module) -> None:
        super().__init__()
        self.nnet = nnet
        self.geom_p = nn.Parameter(torch.tensor(0.0, dtype=torch.float64))  # logit(0.5), float64 as published
        self.lamb = nn.Parameter(torch.tensor(2.0))
        self.register_buffer("last_n_samples", torch.zeros(1))
        self.register_buffer("last_firmom", torch.zeros(1))
        self.register_buffer("last_secmom", torch.zeros(1))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logdet = torch.stack([
            torch.linalg.slogdet(torch.eye(xi.numel(), dtype=x.dtype) + torch.autograd.functional.jacobian(
                lambda t: self.nnet(t.view(1, *x.shape[1:])).reshape(-1), xi.reshape(-1), vectorize=True))[1]
            for xi in x])
        return x + self.nnet(x), logdet

    def inverse(self, y: Tensor, atol: float = 1e-12, rtol: float = 1e-12) -> Tensor:
        x_prev, x = y, y - self.nnet(y)
        for _ in range(1000):
            if bool((((x - x_prev) ** 2) / (atol + rtol * y.abs()) < 1).all()):
                break
            x_prev, x = x, y - self.nnet(x)
        return x


class FCWrapper(nn.Module):
    def __init__(self, fc_module: nn.Module) -> None:
        super().__init__()
        self.fc_module = fc_module

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y, logdet = self.fc_module(x.flatten(1))
        return y.view_as(x), logdet

    def inverse(self, y: Tensor) -> Tensor:
        return self.fc_module.inverse(y.flatten(1)).view_as(y)


class SqueezeLayer(nn.Module):
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        b, c, h, w = x.shape
        y = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, 4 * c, h // 2, w // 2)
        return y, torch.zeros(b, dtype=x.dtype)

    def inverse(self, y: Tensor) -> Tensor:
        return F.pixel_shuffle(y, 2)


class StackediResBlocks(nn.Module):
    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.chain = nn.ModuleList(layers)


class ResidualFlow(nn.Module):
    def __init__(self, size: int = 8, nblocks: tuple[int, ...] = (2, 2, 2), idim: int = 16, fc_idim: int = 16,
                 fc_blocks: int = 4, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        stages, c, s = [], 3, size
        for level, count in enumerate(nblocks):
            chain: list[nn.Module] = [LogitTransform(0.05), ActNorm2d(c)] if level == 0 else []
            for i in range(count):
                convs = [InducedNormConv2d(c, idim, 3, s, g), InducedNormConv2d(idim, idim, 1, s, g),
                         InducedNormConv2d(idim, c, 3, s, g)]
                first = level == 0 and i == 0
                net = [convs[0], Swish(), convs[1], Swish(), convs[2]]
                chain += [iResBlock(nn.Sequential(*([] if first else [Swish()]), *net)), ActNorm2d(c)]
            if level < len(nblocks) - 1:
                chain.append(SqueezeLayer())
                c, s = 4 * c, s // 2
            else:
                for _ in range(fc_blocks):
                    chain += [iResBlock(FCNet(c * s * s, fc_idim, g)), FCWrapper(ActNorm1d(c * s * s))]
            stages.append(StackediResBlocks(chain))
        self.transforms = nn.ModuleList(stages)

    def spectral_layers(self) -> list[nn.Module]:
        return [m for m in self.modules() if isinstance(m, (InducedNormConv2d, InducedNormLinear))]

    def forward(self, x: Tensor, logdet: bool = True) -> tuple[Tensor, Tensor]:
        total = torch.zeros(x.shape[0], dtype=x.dtype)
        for stage in self.transforms:
            for layer in stage.chain:
                if isinstance(layer, iResBlock) and not logdet:
                    x = x + layer.nnet(x)
                    continue
                x, ld = layer(x)
                total = total + ld
        return x, total

    def inverse(self, z: Tensor) -> Tensor:
        for stage in reversed(self.transforms):
            for layer in reversed(stage.chain):
                z = layer.inverse(z)
        return z


class ExponentialMovingAverage:
    def __init__(self, module: nn.Module, decay: float = 0.999) -> None:
        self.module = module
        self.decay = decay
        self.shadow_params = {n: p.detach().clone() for n, p in module.named_parameters()}
        self.nparams = sum(p.numel() for p in module.parameters())


#: Where the published file's pickle says these classes live.
LIB_MODULES = {
    "lib.iresnet": (ResidualFlow,),
    "lib.utils": (ExponentialMovingAverage,),
    "lib.layers.base.activations": (Swish,),
    "lib.layers.base.lipschitz": (InducedNormConv2d, InducedNormLinear),
    "lib.layers.iresblock": (iResBlock, FCNet),
    "lib.layers.normalization": (ActNorm1d, ActNorm2d, ActNormNd),
    "lib.layers.elemwise": (LogitTransform,),
    "lib.layers.squeeze": (SqueezeLayer,),
    "lib.layers.container": (StackediResBlocks,),
    "lib.layers.resflow_wrappers": (FCWrapper,),
}


@contextmanager
def lib_package(sources: bool = False) -> Iterator[None]:
    """A throw-away package ``lib`` with the reference classes, present only inside the block.

    With ``sources``, torch's legacy save stores each class's source code next to it, as it did in 2019 (slow:
    ``inspect`` parses this file once per class).
    """
    saved = {cls: cls.__module__ for classes in LIB_MODULES.values() for cls in classes}
    created = []
    try:
        for name, classes in LIB_MODULES.items():
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                module_name = ".".join(parts[:i])
                if module_name not in sys.modules:
                    module = types.ModuleType(module_name)
                    if sources:
                        module.__file__ = __file__
                    sys.modules[module_name] = module
                    created.append(module_name)
            for cls in classes:
                cls.__module__ = name
                setattr(sys.modules[name], cls.__name__, cls)
        yield
    finally:
        for cls, module in saved.items():
            cls.__module__ = module
        for name in created:
            sys.modules.pop(name, None)


def release_args(**overrides: object) -> argparse.Namespace:
    """The release version's ``args`` fields, CIFAR-10 defaults, with the reduced sizes of the synthetic model."""
    fields = dict(data="cifar10", dataroot="data", imagesize=8, nbits=8, block="resblock", coeff=COEFF,
                  vnorms="2222", n_lipschitz_iters=None, sn_tol=1e-3, learn_p=False, n_power_series=None,
                  factor_out=False, n_dist="poisson", n_samples=1, n_exact_terms=2, var_reduc_lr=0,
                  neumann_grad=True, mem_eff=True, act="swish", idim=16, nblocks="2-2-2", squeeze_first=False,
                  actnorm=True, fc_actnorm=False, batchnorm=False, dropout=0.0, fc=False, kernels="3-1-3",
                  add_noise=True, quadratic=False, fc_end=True, fc_idim=16, preact=True, padding=0,
                  first_resblock=True, cdim=256, optimizer="adam", scheduler=False, nepochs=1000, batchsize=64,
                  lr=1e-3, wd=0, warmup_iters=1000, annealing_iters=0, save="experiments/cifar10", val_batchsize=200,
                  seed=None, ema_val=True, update_freq=1, task="density", scale_dim=False,
                  rcrop_pad_mode="reflect", padding_dist="uniform", resume=None, begin_epoch=0, nworkers=4,
                  print_freq=20, vis_freq=500)
    fields.update(overrides)
    return argparse.Namespace(**fields)


def ours(model: nn.Module, level: int, index: int) -> nn.Module:
    """Our module that holds residual-flows' ``transforms.{level}.chain.{index}``."""
    return model.layers[model.level_starts[level] + index]


def dequantized(n: int, size: int, seed: int) -> Tensor:
    """``(255 x + u) / 256`` of smooth random 8-bit images, float64 in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, max(size // 4, 1), max(size // 4, 1), generator=g, dtype=torch.float64)
    levels = (F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False) * 255).round()
    return (levels + torch.rand(levels.shape, generator=g, dtype=torch.float64)) / 256


def build_reference(size: int = 8, nblocks: tuple[int, ...] = (2, 2, 2), idim: int = 16, seed: int = 0,
                    power_iterations: int = 10) -> ResidualFlow:
    """The synthetic model: power iteration (not run to convergence), ActNorm data init on a batch of 8."""
    model = ResidualFlow(size, nblocks, idim, seed=seed)
    for layer in model.spectral_layers():
        layer.power_iteration(power_iterations)
    with torch.no_grad():
        model(dequantized(8, size, seed + 100).float(), logdet=False)  # initialises the ActNorms
        g = torch.Generator().manual_seed(seed + 1)
        for module in model.modules():
            if isinstance(module, Swish):
                module.beta.add_(0.3 * torch.randn(1, generator=g))
    return model


def write_checkpoint(model: ResidualFlow, path: Path, args: argparse.Namespace | object | None = None,
                     ema: bool = True, zip_format: bool = False, sources: bool = False) -> Path:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.99))
    model.transforms[0].chain[2].nnet[0].weight.sum().backward()
    optimizer.step()  # a real Adam state, and training weights that differ from ...
    average = ExponentialMovingAverage(model)
    g = torch.Generator().manual_seed(7)
    average.shadow_params = {n: p + 0.01 * torch.randn(p.shape, generator=g, dtype=p.dtype)  # ... the EMA weights
                             for n, p in average.shadow_params.items()}
    checkpoint = {"state_dict": model.state_dict(), "optimizer_state_dict": optimizer.state_dict(),
                  "args": release_args() if args is None else args, "ema": average if ema else None,
                  "test_bpd": 3.5}
    with lib_package(sources):
        torch.save(checkpoint, path, _use_new_zipfile_serialization=zip_format)
    return path


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[ResidualFlow, Path]:
    model = build_reference()
    path = write_checkpoint(model, tmp_path_factory.mktemp("resflow") / "cifar10_resflow_2-2-2.pth", sources=True)
    return model.double(), path


# --------------------------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------------------------
def test_synthetic_file_reproduces_the_published_structure_and_its_loading_failures(
        synthetic: tuple[ResidualFlow, Path]) -> None:
    _, path = synthetic
    assert not zipfile.is_zipfile(path)
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(path, weights_only=True)
    ckpt = read_resflow_checkpoint(path)
    assert {"lib.utils.ExponentialMovingAverage", "lib.iresnet.ResidualFlow"} <= set(ckpt.placeholders)
    assert ckpt.args["nblocks"] == "2-2-2" and ckpt.test_bpd == 3.5
    assert ckpt.state_dict["transforms.0.chain.2.geom_p"].dtype == torch.float64
    assert ckpt.state_dict["transforms.0.chain.2.nnet.0.u"].shape == (16 * 8 * 8,)
    assert "transforms.0.chain.2.last_n_samples" in ckpt.state_dict
    assert set(ckpt.ema) == {n for n, _ in synthetic[0].named_parameters()}


def test_train_weights_reproduce_the_reference_exactly(synthetic: tuple[ResidualFlow, Path]) -> None:
    ref, path = synthetic
    model = load_resflow(path, dtype=torch.float64, logdet="exact")
    assert infer_resflow_config(read_resflow_checkpoint(path).state_dict)["blocks"] == (2, 2, 2)
    x = dequantized(2, 8, 1)
    with torch.no_grad():
        z_ref, logdet_ref = ref(x)
    z, logdet = model(x)
    torch.testing.assert_close(z.detach(), z_ref, rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(logdet.detach(), logdet_ref, rtol=1e-10, atol=1e-9)
    log_p = -0.5 * (z_ref.flatten(1) ** 2 + LOG2PI).sum(1) + logdet_ref
    torch.testing.assert_close(model.log_prob(x).detach(), log_p, rtol=1e-10, atol=1e-9)
    with torch.no_grad():
        x_back = model.inverse(z)[0]
        x_ref = ref.inverse(z_ref)
    assert float((x_ref - x).abs().max()) < 1e-6
    assert float((x_back - x).abs().max()) < 1e-4  # our inverse stops at atol = rtol = 1e-5, as residual-flows


def test_stored_power_iteration_vectors_are_used_as_they_are(synthetic: tuple[ResidualFlow, Path]) -> None:
    ref, path = synthetic
    model = load_resflow(path, dtype=torch.float64)
    mine = ours(model, 0, 2).nnet[0]
    theirs = ref.transforms[0].chain[2].nnet[0]
    torch.testing.assert_close(mine.u, theirs.u, rtol=0, atol=0)
    with torch.no_grad():
        stored = float(torch.dot(theirs.u, theirs.op(theirs.weight, theirs.v)))
    assert float(mine.sigma().detach()) == pytest.approx(stored, rel=1e-12)
    converged = copy.deepcopy(theirs)
    converged.power_iteration(300)
    assert float(converged.scale) > stored * (1 + 1e-6)  # the stored vectors were not converged: sigma differs


def test_ema_weights_are_copied_and_spectral_norms_refreshed(synthetic: tuple[ResidualFlow, Path]) -> None:
    ref, path = synthetic
    ckpt = read_resflow_checkpoint(path)
    train = load_resflow(path, dtype=torch.float64)
    ema = load_resflow(path, weights="ema", dtype=torch.float64)
    w_file = ckpt.ema["transforms.2.chain.4.nnet.nnet.1.weight"].double()
    torch.testing.assert_close(ours(ema, 2, 4).nnet.nnet[1].weight.detach(), w_file, rtol=0, atol=0)
    assert float((ours(train, 2, 4).nnet.nnet[1].weight - w_file).abs().max()) > 1e-3
    torch.testing.assert_close(ours(ema, 0, 1).log_scale.detach(),
                               ckpt.ema["transforms.0.chain.1.weight"].double(), rtol=0, atol=0)
    for mine in (ours(ema, 2, 4).nnet.nnet[1], ours(ema, 1, 0).nnet[3]):
        weight = mine.weight.detach().reshape(mine.weight.shape[0], -1)
        exact = float(torch.linalg.matrix_norm(weight, ord=2))
        assert abs(float(mine.scale) - exact) < 1e-2 * exact  # power iteration ran on the EMA weights


def test_zip_format_and_float32(synthetic: tuple[ResidualFlow, Path], tmp_path: Path) -> None:
    ref, _ = synthetic
    path = write_checkpoint(build_reference(), tmp_path / "zip.pth", zip_format=True)
    assert zipfile.is_zipfile(path)
    model = load_resflow(path)
    x = dequantized(2, 8, 2)
    with torch.no_grad():
        z = model(x.float())[0]
        torch.testing.assert_close(z.double(), ref(x, logdet=False)[0], rtol=1e-4, atol=1e-4)


def test_nothing_in_the_file_is_executed(synthetic: tuple[ResidualFlow, Path], tmp_path: Path) -> None:
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self) -> tuple:
            return (os.system, (f"touch {marker}",))

    path = write_checkpoint(build_reference(), tmp_path / "evil.pth", args=Payload(), ema=False)
    with pytest.raises(ValueError, match="'args' is <placeholder for posix.system>"):
        load_resflow(path)
    assert not marker.exists()


def test_wrong_files_get_clear_errors(synthetic: tuple[ResidualFlow, Path], tmp_path: Path) -> None:
    ref, path = synthetic
    ckpt = read_resflow_checkpoint(path)
    glow_like = tmp_path / "glow.pt"
    torch.save({"flow.layers.1.actnorm.bias": torch.zeros(1, 12, 1, 1)}, glow_like)
    with pytest.raises(ValueError, match="unexpected entry 'flow.layers.1.actnorm.bias'"):
        load_resflow(glow_like)
    other = tmp_path / "other.pth"
    torch.save({"model": ckpt.state_dict}, other)
    with pytest.raises(ValueError, match="no 'state_dict'"):
        load_resflow(other)
    contradicting = write_checkpoint(build_reference(), tmp_path / "args.pth", args=release_args(nblocks="16-16-16"),
                                     ema=False)
    with pytest.raises(ValueError, match="nblocks: args say '16-16-16'"):
        load_resflow(contradicting)
    unsupported = write_checkpoint(build_reference(), tmp_path / "sq.pth", args=release_args(squeeze_first=True),
                                   ema=False)
    with pytest.raises(ValueError, match="squeeze_first"):
        load_resflow(unsupported)
    damaged = dict(ckpt.state_dict)
    damaged.pop("transforms.1.chain.2.nnet.3.u")
    torch.save({"state_dict": damaged}, tmp_path / "damaged.pth")
    with pytest.raises(ValueError, match=r"missing \['transforms.1.chain.2.nnet.3.u'\]"):
        load_resflow(tmp_path / "damaged.pth")
    no_ema = write_checkpoint(build_reference(), tmp_path / "noema.pth", ema=False)
    with pytest.raises(ValueError, match="has none"):
        load_resflow(no_ema, weights="ema")


def test_bare_state_dicts_load_too(synthetic: tuple[ResidualFlow, Path], tmp_path: Path) -> None:
    ref, path = synthetic
    sd = read_resflow_checkpoint(path).state_dict
    torch.save(sd, tmp_path / "bare.pth")
    model = load_resflow(tmp_path / "bare.pth", dtype=torch.float64)
    x = dequantized(2, 8, 3)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], ref(x, logdet=False)[0], rtol=1e-11, atol=1e-12)


def test_published_layout_at_32x32(tmp_path: Path) -> None:
    """The CIFAR-10 key layout (u/v at full spatial size per level), reduced width: keys, shapes and z agree."""
    ref = build_reference(size=32, idim=8, power_iterations=3)
    path = write_checkpoint(ref, tmp_path / "c32.pth", args=release_args(imagesize=32, idim=8), ema=False)
    model = load_resflow(path, dtype=torch.float64)
    assert ours(model, 1, 0).nnet[1].u.shape == (8 * 16 * 16,)
    ref = ref.double()
    x = dequantized(2, 32, 4)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], ref(x, logdet=False)[0], rtol=1e-11, atol=1e-12)


@pytest.mark.slow
def test_published_size_has_the_documented_entry_and_parameter_counts() -> None:
    """1642 entries and 25,174,233 parameters at 16-16-16, width 512 (CHECKPOINTS.md 2.3); our model matches."""
    ref = ResidualFlow(32, (16, 16, 16), 512, 128)
    sd = ref.state_dict()
    assert len(sd) == 1642 and sum(p.numel() for p in ref.parameters()) == 25_174_233
    config = infer_resflow_config(sd, vars(release_args(imagesize=32, idim=512, nblocks="16-16-16", fc_idim=128)))
    assert config["blocks"] == (16, 16, 16) and config["hidden"] == 512 and RESFLOW_ARGS["coeff"] == COEFF
