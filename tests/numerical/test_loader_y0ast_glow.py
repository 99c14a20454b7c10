"""load_y0ast_glow against an independent re-implementation of y0ast/Glow-PyTorch's Glow.

The reference below is written here from the description in CHECKPOINTS.md section 1 (module tree, parameter
names and shapes, forward and reverse math); it shares no code with ``invertible``. Tests build a reduced model
(hidden 16, K = 2, L = 3, 32x32x3) with data-dependent ActNorm initialisation and perturbed zero-initialised
convolutions, save its state dict in the 2019 legacy format with ``hparams.json``, and check that the loader's Glow
reproduces the reference's latents, bits/dim and reconstructions.
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invertible.diagnostics import reconstruction_error
from invertible.loaders import (infer_y0ast_architecture, load_y0ast_glow, y0ast_bits_per_dim, y0ast_latents,
                                y0ast_preprocess, y0ast_reverse)

LOG2PI = math.log(2 * math.pi)


# --------------------------------------------------------------------------------------------------------------
# Reference: y0ast's module tree and math (float64), names as in the published state dict
# --------------------------------------------------------------------------------------------------------------
class ActNorm2d(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.logs = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.inited = False  # a plain attribute, as upstream: not in the state dict

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if not self.inited:
            with torch.no_grad():
                mean = x.mean(dim=(0, 2, 3), keepdim=True)
                var = ((x - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)
                self.bias.copy_(-mean)
                self.logs.copy_(torch.log(1.0 / (var.sqrt() + 1e-6)))
            self.inited = True
        return (x + self.bias) * torch.exp(self.logs), x.shape[2] * x.shape[3] * self.logs.sum().expand(x.shape[0])

    def reverse(self, y: Tensor) -> Tensor:
        return y * torch.exp(-self.logs) - self.bias


class InvConvLU(nn.Module):
    def __init__(self, channels: int, g: torch.Generator) -> None:
        super().__init__()
        q = torch.linalg.qr(torch.randn(channels, channels, generator=g, dtype=torch.float64))[0]
        p, lower, upper = torch.linalg.lu(q)
        s = torch.diagonal(upper)
        self.register_buffer("p", p)
        self.register_buffer("sign_s", torch.sign(s))
        self.lower = nn.Parameter(lower.clone())  # stored with its (masked-out) unit diagonal, as upstream
        self.log_s = nn.Parameter(torch.log(s.abs()))
        self.upper = nn.Parameter(torch.triu(upper, 1))

    def matrix(self) -> Tensor:
        c = self.p.shape[0]
        mask = torch.tril(torch.ones(c, c, dtype=self.p.dtype), -1)
        eye = torch.eye(c, dtype=self.p.dtype)
        diagonal = torch.diag(self.sign_s * torch.exp(self.log_s))
        return self.p @ (self.lower * mask + eye) @ (self.upper * mask.T + diagonal)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        w = self.matrix()
        return F.conv2d(x, w[:, :, None, None]), x.shape[2] * x.shape[3] * self.log_s.sum().expand(x.shape[0])

    def reverse(self, y: Tensor) -> Tensor:
        return F.conv2d(y, torch.inverse(self.matrix())[:, :, None, None])


class InvConv(nn.Module):
    def __init__(self, channels: int, g: torch.Generator) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.linalg.qr(torch.randn(channels, channels, generator=g,
                                                               dtype=torch.float64))[0])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logdet = torch.linalg.slogdet(self.weight)[1] * x.shape[2] * x.shape[3]
        return F.conv2d(x, self.weight[:, :, None, None]), logdet.expand(x.shape[0])

    def reverse(self, y: Tensor) -> Tensor:
        return F.conv2d(y, torch.inverse(self.weight)[:, :, None, None])


class Conv2d(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False)
        self.actnorm = ActNorm2d(c_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.actnorm(self.conv(x))[0]


class Conv2dZeros(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.logs = nn.Parameter(torch.zeros(c_out, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x) * torch.exp(self.logs * 3)


class FlowStep(nn.Module):
    def __init__(self, channels: int, hidden: int, coupling: str, lu: bool, g: torch.Generator) -> None:
        super().__init__()
        self.coupling = coupling
        self.actnorm = ActNorm2d(channels)
        self.invconv = InvConvLU(channels, g) if lu else InvConv(channels, g)
        out = channels if coupling == "affine" else channels // 2
        self.block = nn.Sequential(Conv2d(channels // 2, hidden, 3), nn.ReLU(), Conv2d(hidden, hidden, 1), nn.ReLU(),
                                   Conv2dZeros(hidden, out))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x, l1 = self.actnorm(x)
        x, l2 = self.invconv(x)
        c = x.shape[1] // 2
        z1, z2 = x[:, :c], x[:, c:]
        h = self.block(z1)
        if self.coupling == "additive":
            return torch.cat([z1, z2 + h], 1), l1 + l2
        shift, scale = h[:, 0::2], torch.sigmoid(h[:, 1::2] + 2.0)
        z2 = (z2 + shift) * scale
        return torch.cat([z1, z2], 1), l1 + l2 + torch.log(scale).sum(dim=(1, 2, 3))

    def reverse(self, y: Tensor) -> Tensor:
        c = y.shape[1] // 2
        z1, z2 = y[:, :c], y[:, c:]
        h = self.block(z1)
        if self.coupling == "additive":
            z2 = z2 - h
        else:
            z2 = z2 / torch.sigmoid(h[:, 1::2] + 2.0) - h[:, 0::2]
        return self.actnorm.reverse(self.invconv.reverse(torch.cat([z1, z2], 1)))


class Split2d(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = Conv2dZeros(channels // 2, channels)


class SqueezeLayer(nn.Module):
    pass


class FlowNet(nn.Module):
    def __init__(self, shape: tuple[int, int, int], hidden: int, K: int, L: int, coupling: str, lu: bool,
                 g: torch.Generator) -> None:
        super().__init__()
        c, h, w = shape
        self.layers = nn.ModuleList()
        for level in range(L):
            c, h, w = 4 * c, h // 2, w // 2
            self.layers.append(SqueezeLayer())
            for _ in range(K):
                self.layers.append(FlowStep(c, hidden, coupling, lu, g))
            if level < L - 1:
                self.layers.append(Split2d(c))
                c //= 2
        self.top_shape = (c, h, w)


class RefGlow(nn.Module):
    def __init__(self, shape: tuple[int, int, int] = (3, 32, 32), hidden: int = 16, K: int = 2, L: int = 3,
                 coupling: str = "affine", lu: bool = True, learn_top: bool = True, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.flow = FlowNet(shape, hidden, K, L, coupling, lu, g)
        c, h, w = self.flow.top_shape
        self.learn_top = learn_top
        if learn_top:
            self.learn_top_fn = Conv2dZeros(2 * c, 2 * c)
        self.register_buffer("prior_h", torch.zeros(1, 2 * c, h, w))


def squeeze(x: Tensor) -> Tensor:
    b, c, h, w = x.shape
    return x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, 4 * c, h // 2, w // 2)


def unsqueeze(x: Tensor) -> Tensor:
    b, c, h, w = x.shape
    return x.view(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c // 4, 2 * h, 2 * w)


def gaussian_logp(mean: Tensor, logs: Tensor, x: Tensor) -> Tensor:
    return (-0.5 * (2 * logs + (x - mean) ** 2 * torch.exp(-2 * logs) + LOG2PI)).sum(dim=(1, 2, 3))


def top_prior(model: RefGlow, batch: int) -> tuple[Tensor, Tensor]:
    c = model.flow.top_shape[0]
    if not model.learn_top:
        zeros = torch.zeros(batch, c, *model.flow.top_shape[1:], dtype=model.prior_h.dtype)
        return zeros, zeros
    h = model.learn_top_fn(model.prior_h.repeat(batch, 1, 1, 1))
    return h[:, :c], h[:, c:]


def ref_encode(model: RefGlow, x: Tensor, noise: Tensor | None = None) -> tuple[Tensor, list[Tensor], Tensor]:
    """y0ast's forward with the paper's stored split latents: ``(z, zn, bpd)``."""
    dims = x[0].numel()
    objective = torch.zeros(x.shape[0], dtype=x.dtype)
    if noise is not None:
        x = x + noise / 256
        objective = objective - dims * math.log(256)
    z, zn = x, []
    for layer in model.flow.layers:
        if isinstance(layer, SqueezeLayer):
            z = squeeze(z)
        elif isinstance(layer, FlowStep):
            z, logdet = layer(z)
            objective = objective + logdet
        else:
            c = z.shape[1] // 2
            z1, z2 = z[:, :c], z[:, c:]
            h = layer.conv(z1)
            objective = objective + gaussian_logp(h[:, 0::2], h[:, 1::2], z2)
            zn.append(z2)
            z = z1
    mean, logs = top_prior(model, x.shape[0])
    objective = objective + gaussian_logp(mean, logs, z)
    return z, zn, -objective / (dims * math.log(2.0))


def ref_reverse(model: RefGlow, z: Tensor, zn: list[Tensor]) -> Tensor:
    zn = list(zn)
    for layer in reversed(model.flow.layers):
        if isinstance(layer, SqueezeLayer):
            z = unsqueeze(z)
        elif isinstance(layer, FlowStep):
            z = layer.reverse(z)
        else:
            z = torch.cat([z, zn.pop()], 1)
    return z


def image_batch(n: int, seed: int, shape: tuple[int, int, int] = (3, 32, 32)) -> Tensor:
    """Smooth random 8-bit images (uint8): low-resolution noise upsampled, like natural images' statistics."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, shape[0], shape[1] // 4, shape[2] // 4, generator=g, dtype=torch.float64)
    fine = F.interpolate(coarse, size=shape[1:], mode="bilinear", align_corners=False)
    fine = fine + 0.05 * torch.randn(fine.shape, generator=g, dtype=torch.float64)
    return (fine.clamp(0, 1) * 255).round().to(torch.uint8)


def build_reference(coupling: str = "affine", lu: bool = True, learn_top: bool = True, seed: int = 0,
                    K: int = 2, L: int = 3, hidden: int = 16, shape: tuple[int, int, int] = (3, 32, 32)) -> RefGlow:
    """The synthetic checkpoint's model: ActNorm data init, then perturbed zero-initialised convolutions."""
    torch.manual_seed(seed)
    model = RefGlow(shape, hidden, K, L, coupling, lu, learn_top, seed).double()
    x = image_batch(16, seed + 1, shape).double() / 256 - 0.5
    with torch.no_grad():
        z = x
        for layer in model.flow.layers:  # data-dependent init of every ActNorm (those in the blocks too)
            if isinstance(layer, SqueezeLayer):
                z = squeeze(z)
            elif isinstance(layer, FlowStep):
                z = layer(z)[0]
            else:
                z = z[:, : z.shape[1] // 2]
        g = torch.Generator().manual_seed(seed + 2)
        for module in model.modules():
            if isinstance(module, Conv2dZeros):
                module.conv.weight.copy_(0.02 * torch.randn(module.conv.weight.shape, generator=g, dtype=torch.float64))
                module.conv.bias.copy_(0.1 * torch.randn(module.conv.bias.shape, generator=g, dtype=torch.float64))
                module.logs.copy_(0.05 * torch.randn(module.logs.shape, generator=g, dtype=torch.float64))
    return model


HPARAMS = {"Dataset": None, "K": 2, "L": 3, "LU_decomposed": True, "actnorm_scale": 1.0, "augment": True,
           "batch_size": 64, "cuda": True, "dataroot": "/home/joost/data", "dataset": "cifar10", "download": False,
           "epochs": 250, "eval_batch_size": 512, "flow_coupling": "affine", "flow_permutation": "invconv",
           "fresh": True, "hidden_channels": 16, "learn_top": True, "lr": 0.0005, "max_grad_clip": 0,
           "max_grad_norm": 0, "n_init_batches": 8, "n_workers": 6, "output_dir": "output/", "saved_model": "",
           "saved_optimizer": "", "seed": 0, "warmup_steps": 4000, "y_condition": False, "y_weight": 0.01}


def write_checkpoint(model: RefGlow, folder: Path, **hparams: object) -> Path:
    """``folder/glow/`` with the state dict in the 2019 legacy format (float32, as trained) and hparams.json."""
    target = folder / "glow"
    target.mkdir(parents=True, exist_ok=True)
    state = {k: v.float() for k, v in model.state_dict().items()}
    torch.save(state, target / "glow_affine_coupling.pt", _use_new_zipfile_serialization=False)
    (target / "hparams.json").write_text(json.dumps({k: v for k, v in {**HPARAMS, **hparams}.items()
                                                     if k != "Dataset"}, sort_keys=True, indent=4))
    return target


@pytest.fixture(scope="module")
def affine(tmp_path_factory: pytest.TempPathFactory) -> tuple[RefGlow, Path]:
    model = build_reference()
    model.float().double()  # the file holds float32: compare against the rounded weights
    folder = write_checkpoint(model, tmp_path_factory.mktemp("y0ast"))
    model.load_state_dict({k: v.double() for k, v in torch.load(folder / "glow_affine_coupling.pt").items()})
    return model, folder


# --------------------------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------------------------
def test_synthetic_file_has_the_published_structure(affine: tuple[RefGlow, Path]) -> None:
    _, folder = affine
    path = folder / "glow_affine_coupling.pt"
    assert not zipfile.is_zipfile(path)  # the legacy (pre-1.6) format
    sd = torch.load(path, weights_only=True)
    assert "flow.layers.1.invconv.lower" in sd and sd["flow.layers.1.block.4.logs"].shape == (12, 1, 1)
    assert sd["flow.layers.3.conv.conv.weight"].shape == (12, 6, 3, 3)  # the first Split2d, after K = 2 steps
    keys = list(sd)
    split = keys.index("flow.layers.3.conv.logs")
    assert keys[split + 1] == "flow.layers.3.conv.conv.weight"  # logs before conv.*, as upstream
    arch = infer_y0ast_architecture(sd, json.loads((folder / "hparams.json").read_text()))
    assert (arch.in_shape, arch.levels, arch.depth, arch.hidden, arch.coupling, arch.permutation, arch.learn_top) == \
        ((3, 32, 32), 3, 2, 16, "affine", "lu", True)


def test_latents_bpd_and_reconstruction_match_the_reference(affine: tuple[RefGlow, Path]) -> None:
    ref, folder = affine
    model = load_y0ast_glow(folder, dtype=torch.float64)
    x = y0ast_preprocess(image_batch(6, 11), torch.float64)
    with torch.no_grad():
        z_ref, zn_ref, _ = ref_encode(ref, x)
        z_top, zn = y0ast_latents(model, x)
        assert z_top.shape == z_ref.shape == (6, 48, 4, 4) and [t.shape for t in zn] == [t.shape for t in zn_ref]
        torch.testing.assert_close(z_top, z_ref, rtol=1e-11, atol=1e-12)
        for ours, theirs in zip(zn, zn_ref):
            torch.testing.assert_close(ours, theirs, rtol=1e-11, atol=1e-12)
        # bits/dim, with y0ast's dequantisation (the same noise) and without it (the paper's copy)
        noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
        bpd = y0ast_bits_per_dim(model, x, dequantize=True, generator=torch.Generator().manual_seed(5))
        torch.testing.assert_close(bpd, ref_encode(ref, x, noise)[2], rtol=1e-11, atol=1e-11)
        plain = y0ast_bits_per_dim(model, x, dequantize=False)
        ref_plain = ref_encode(ref, x)[2]
        torch.testing.assert_close(plain, ref_plain, rtol=1e-11, atol=1e-11)
        assert bool(((bpd - plain - 8.0).abs() < 0.5).all())  # the -D log 256 term, give or take the noise
        # reconstruction through the stored split latents
        x_ref = ref_reverse(ref, z_ref, zn_ref)
        torch.testing.assert_close(y0ast_reverse(model, z_top, zn), x_ref, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(model.inverse(model(x)[0])[0], x_ref, rtol=1e-10, atol=1e-12)
        assert float((x_ref - x).abs().max()) < 1e-9


@pytest.mark.parametrize("coupling,lu,learn_top", [("additive", False, False), ("affine", False, True),
                                                   ("additive", True, True)])
def test_other_variants_match_the_reference(tmp_path: Path, coupling: str, lu: bool, learn_top: bool) -> None:
    ref = build_reference(coupling, lu, learn_top, seed=3, K=1, L=2)
    ref.float().double()
    folder = write_checkpoint(ref, tmp_path, K=1, L=2, flow_coupling=coupling, LU_decomposed=lu, learn_top=learn_top)
    model = load_y0ast_glow(folder, dtype=torch.float64)
    x = y0ast_preprocess(image_batch(4, 12), torch.float64)
    with torch.no_grad():
        z_ref, zn_ref, bpd_ref = ref_encode(ref, x)
        torch.testing.assert_close(y0ast_latents(model, x)[0], z_ref, rtol=1e-11, atol=1e-12)
        torch.testing.assert_close(y0ast_bits_per_dim(model, x, dequantize=False), bpd_ref, rtol=1e-11, atol=1e-11)
        torch.testing.assert_close(model.inverse(model(x)[0])[0], ref_reverse(ref, z_ref, zn_ref), rtol=1e-10,
                                   atol=1e-12)


def test_float32_model_and_zip_input(affine: tuple[RefGlow, Path], tmp_path: Path) -> None:
    ref, folder = affine
    archive = tmp_path / "glow.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in ("glow_affine_coupling.pt", "hparams.json"):
            zf.write(folder / name, f"glow/{name}")
    model = load_y0ast_glow(archive)
    assert next(model.parameters()).dtype == torch.float32 and not model.training
    x = y0ast_preprocess(image_batch(4, 13))
    with torch.no_grad():
        bpd = y0ast_bits_per_dim(model, x, dequantize=False)
        torch.testing.assert_close(bpd.double(), ref_encode(ref, x.double())[2], rtol=1e-5, atol=1e-5)
        assert float(reconstruction_error(model, x).l2.max()) < 1e-4


def test_a_zip_format_pt_file_reads_like_the_legacy_one(affine: tuple[RefGlow, Path], tmp_path: Path) -> None:
    """A y0ast state dict re-saved by a modern torch (zip format) was taken for glow.zip and refused with
    'holds no glow_affine_coupling.pt'."""
    _, folder = affine
    legacy = load_y0ast_glow(folder / "glow_affine_coupling.pt", check_hparams=False)
    modern = tmp_path / "glow_affine_coupling.pt"
    torch.save(torch.load(folder / "glow_affine_coupling.pt", weights_only=True), modern)
    assert zipfile.is_zipfile(modern) and not zipfile.is_zipfile(folder / "glow_affine_coupling.pt")
    model = load_y0ast_glow(modern, check_hparams=False)
    for (name, a), (_, b) in zip(legacy.state_dict().items(), model.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("damage,match", [
    ("empty", r"empty \(0 bytes\).*fetch glow.zip again"),
    ("truncated", r"cannot be read \(.*\); it is truncated or damaged \(fetch glow.zip again\)"),
    ("garbage", r"cannot be read .*damaged \(fetch glow.zip again\)"),
])
def test_damaged_files_get_value_errors_that_say_what_to_do(affine: tuple[RefGlow, Path], tmp_path: Path,
                                                            damage: str, match: str) -> None:
    raw = (affine[1] / "glow_affine_coupling.pt").read_bytes()
    data = {"empty": b"", "truncated": raw[: len(raw) // 2], "garbage": bytes(range(256)) * 4}[damage]
    target = tmp_path / "glow_affine_coupling.pt"
    target.write_bytes(data)
    with pytest.raises(ValueError, match=match):
        load_y0ast_glow(target, check_hparams=False)


def test_preprocess_matches_y0ast_for_uint8_and_to_tensor_inputs() -> None:
    levels = torch.arange(256, dtype=torch.uint8)
    expected = levels.double() / 256 - 0.5
    torch.testing.assert_close(y0ast_preprocess(levels, torch.float64), expected, rtol=0, atol=0)
    to_tensor = levels.float() / 255  # torchvision's ToTensor
    torch.testing.assert_close(y0ast_preprocess(to_tensor).double(), expected, rtol=0, atol=1e-7)


def test_split_latents_are_sampled_from_the_learned_prior_when_absent(affine: tuple[RefGlow, Path]) -> None:
    ref, folder = affine
    model = load_y0ast_glow(folder, dtype=torch.float64)
    x = y0ast_preprocess(image_batch(2, 14), torch.float64)
    with torch.no_grad():
        z_top, zn = y0ast_latents(model, x)
        cold = y0ast_reverse(model, z_top, None, temperature=0.0)
        # at temperature 0 each z2 is the prior mean of the reference's Split2d given z1
        h = z_top
        means = []
        for layer in reversed(ref.flow.layers):
            if isinstance(layer, SqueezeLayer):
                h = unsqueeze(h)
            elif isinstance(layer, FlowStep):
                h = layer.reverse(h)
            else:
                mean = layer.conv(h)[:, 0::2]
                means.append(mean)
                h = torch.cat([h, mean], 1)
        torch.testing.assert_close(cold, h, rtol=1e-10, atol=1e-12)
        warm = y0ast_reverse(model, z_top, None, generator=torch.Generator().manual_seed(0))
        assert float((warm - cold).abs().max()) > 1e-3


def test_an_exploding_affine_inverse_is_reported_not_raised(tmp_path: Path) -> None:
    """CHECKPOINTS.md 4.3 step 4: scale channels driven to sigmoid -> 0 for large inputs make the inverse overflow."""
    ref = build_reference(seed=4, K=2, L=2)
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for layer in ref.flow.layers:
            if isinstance(layer, FlowStep):
                out = layer.block[4]
                out.conv.weight[1::2] = 0.3 * torch.randn(out.conv.weight[1::2].shape, generator=g,
                                                          dtype=torch.float64)
                out.conv.bias[1::2] = 0.0
                out.logs.zero_()
    folder = write_checkpoint(ref, tmp_path, K=2, L=2)
    model = load_y0ast_glow(folder)  # float32, as the paper's script runs it
    noise = (torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(1)) < 0.5).float() * 0.98 - 0.49
    stats = reconstruction_error(model, noise)
    ref32 = ref.float()
    with torch.no_grad():
        z, zn, _ = ref_encode(ref32, noise)
        ref_hat = ref_reverse(ref32, z, zn)
    ref_bad = ~torch.isfinite(ref_hat).flatten(1).all(1)
    assert int(stats.nonfinite.gt(0).sum()) > 0  # counted, not raised
    assert torch.equal(stats.nonfinite.gt(0), ref_bad)  # the same samples fail as in the reference
    in_range = reconstruction_error(model, y0ast_preprocess(image_batch(8, 3)))
    assert int(in_range.nonfinite.sum()) == 0 and float(in_range.l2.max()) < 0.05  # data still reconstruct


# --------------------------------------------------------------------------------------------------------------
# Files of the wrong structure
# --------------------------------------------------------------------------------------------------------------
def test_missing_hparams_warns_and_contradicting_hparams_fail(affine: tuple[RefGlow, Path], tmp_path: Path) -> None:
    _, folder = affine
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "glow_affine_coupling.pt").write_bytes((folder / "glow_affine_coupling.pt").read_bytes())
    with pytest.warns(UserWarning, match="no hparams.json"):
        load_y0ast_glow(alone)
    (alone / "hparams.json").write_text(json.dumps({**HPARAMS, "K": 32, "hidden_channels": 512}))
    with pytest.raises(ValueError, match=r"K: hparams.json says 32.*\n.*hidden_channels"):
        load_y0ast_glow(alone)


@pytest.mark.parametrize("damage,match", [
    (lambda sd: sd.pop("flow.layers.2.block.2.conv.weight"), "lacks 'flow.layers.2.block.2.conv.weight'"),
    (lambda sd: sd.__setitem__("flow.layers.1.extra", torch.zeros(1)), "does not use"),
    (lambda sd: sd.__setitem__("project_ycond.linear.weight", torch.zeros(96, 10)), "class-conditional"),
    (lambda sd: sd.__setitem__("flow.layers.1.block.4.conv.weight", torch.zeros(5, 16, 3, 3)), "neither affine"),
    (lambda sd: sd.__setitem__("prior_h", torch.ones_like(sd["prior_h"])), "prior_h is not all zeros"),
    (lambda sd: [sd.pop(k) for k in list(sd) if ".invconv." in k], "flow_permutation"),
])
def test_damaged_state_dicts_get_clear_errors(affine: tuple[RefGlow, Path], tmp_path: Path, damage, match) -> None:
    _, folder = affine
    sd = torch.load(folder / "glow_affine_coupling.pt", weights_only=True)
    damage(sd)
    target = tmp_path / "glow"
    target.mkdir()
    torch.save(sd, target / "glow_affine_coupling.pt")
    with pytest.raises(ValueError, match=match):
        load_y0ast_glow(target, check_hparams=False)


def test_shuffle_permutation_and_foreign_files_are_refused(affine: tuple[RefGlow, Path], tmp_path: Path) -> None:
    _, folder = affine
    sd = {k: v for k, v in torch.load(folder / "glow_affine_coupling.pt", weights_only=True).items()
          if ".invconv." not in k}
    target = tmp_path / "shuffle"
    target.mkdir()
    torch.save(sd, target / "glow_affine_coupling.pt")
    (target / "hparams.json").write_text(json.dumps({**HPARAMS, "flow_permutation": "shuffle"}))
    with pytest.raises(ValueError, match="never saved"):
        load_y0ast_glow(target)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    torch.save({"state_dict": {"transforms.0.chain.1.weight": torch.zeros(3)}}, foreign / "glow_affine_coupling.pt")
    with pytest.raises(ValueError, match="plain state dict"):
        load_y0ast_glow(foreign, check_hparams=False)
    with pytest.raises(FileNotFoundError, match="glow_affine_coupling.pt"):
        load_y0ast_glow(tmp_path / "shuffle" / "..", check_hparams=False)


@pytest.mark.slow
def test_published_size_has_the_documented_entry_and_parameter_counts() -> None:
    """1546 entries and 44,235,312 parameters at K = 32, L = 3, width 512 (CHECKPOINTS.md 1.3); loads as ours."""
    ref = RefGlow(hidden=512, K=32, L=3)
    sd = ref.state_dict()
    assert len(sd) == 1546 and sum(p.numel() for p in ref.parameters()) == 44_235_312
    arch = infer_y0ast_architecture(sd, {**HPARAMS, "K": 32, "hidden_channels": 512})
    assert (arch.levels, arch.depth, arch.hidden) == (3, 32, 512)
