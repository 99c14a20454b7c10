"""``python -m invertible.report``: verdicts on healthy and broken flows, the broken layer and the failing inputs
named, every kind of MODEL, the written files (HTML parses and embeds its figures, JSON round-trips), bad input.

The models are small ``DenseFlow``s in float32 (the working precision the verdict judges). The collapsed coupling's
scale ``sigmoid(h - 198)`` is exactly 0 in float32 (below the smallest subnormal, ``e^-103``) whatever the input,
so its inverse computes ``0 / 0``: a certainty, not a seeded outcome, on any CPU and kernel variant.
"""

from __future__ import annotations

import base64
import html.parser
import importlib
import importlib.util
import json
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from torch import nn

from invertible import AffineCoupling, Sequential
from invertible.models import DenseFlow
from invertible.report import Options, Subject, make_report, render_report, write_report
from invertible.report.cli import main
from invertible.report.measure import flat_layers

NUMERICAL = Path(__file__).parents[1] / "numerical"

#: A module of factories, written where a test can import it as ``report_models:...``: the same thing a user of
#: another project does.
FACTORIES = textwrap.dedent('''
    import torch
    from invertible.models import DenseFlow

    def _flow():
        return DenseFlow(4, steps=3, hidden=8, zero_init=False, seed=1)

    def _inputs():
        return torch.randn(96, 4, generator=torch.Generator().manual_seed(2))

    def healthy():
        return _flow(), _inputs()

    def collapse(flow, step=1):
        """Set the output bias of step ``step``'s scale net so that every scale underflows to 0 in float32."""
        coupling = [m for m in flow.modules() if type(m).__name__ == "AffineCoupling"][step]
        last = [m for m in coupling.net.modules() if isinstance(m, torch.nn.Linear)][-1]
        with torch.no_grad():
            last.weight[1::2] = 0.0
            last.bias[1::2] = -200.0
        return coupling

    def broken():
        flow = _flow()
        collapse(flow)
        return flow, _inputs()

    def bare():
        return _flow()

    def shapeless():
        from invertible import ActNorm, Sequential
        return Sequential(ActNorm(4, data_init=False))

    def not_a_flow():
        return torch.nn.Linear(2, 2)
''')


@pytest.fixture()
def factories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    (tmp_path / "report_models.py").write_text(FACTORIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    sys.modules.pop("report_models", None)
    import report_models  # type: ignore[import-not-found]

    return report_models


FAST = ["--no-progress", "--n-noise", "32", "--attack-steps", "3", "--layer-inputs", "4"]


def read(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def label_of(flow: nn.Module, layer: nn.Module) -> str:
    return next(label for label, m in flat_layers(flow) if m is layer)


# --------------------------------------------------------------------------------------------------------------
# Verdicts, the broken layer, the failing inputs
# --------------------------------------------------------------------------------------------------------------
def test_a_healthy_flow_passes_and_a_collapsed_scale_fails_naming_layer_and_inputs(
        factories: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    assert main(["report_models:healthy", "--out", str(good), "--fail-on", "non-invertible", *FAST]) == 0
    healthy = read(good)["measurement"]
    assert healthy["label"] == "invertible" and healthy["failing_sets"] == []
    assert healthy["layers"]["breaks_at"] is None
    assert all(r["label"] == "invertible" and r["nonfinite"] == 0 for r in healthy["sets"].values())
    assert main(["report_models:broken", "--out", str(bad), "--fail-on", "non-invertible", *FAST]) == 1
    assert main(["report_models:broken", "--out", str(tmp_path / "no-ci"), *FAST]) == 0  # without --fail-on
    broken = read(bad)["measurement"]
    flow, _ = factories.broken()
    expected = label_of(flow, [m for m in flow.modules() if isinstance(m, AffineCoupling)][1])
    data = broken["sets"]["factory-data"]
    assert broken["label"] == "non-invertible" and data["label"] == "non-invertible"
    assert data["nonfinite"] == 96 and data["failing_indices"] == list(range(96))  # every input
    assert broken["layers"]["breaks_at"] == expected and broken["layers"]["worst_inverse"] == expected
    assert broken["layers"]["set"] == "factory-data"
    rows = {r["layer"]: r for r in broken["layers"]["rows"]}
    assert rows[expected]["round_trip"] == "inf"  # its own round trip is non-finite, ...
    layers = [r["layer"] for r in broken["layers"]["rows"]]
    after = layers[layers.index(expected) + 1:]
    assert all(float(rows[k]["inverse_pass_error"]) < 1e-3 for k in after)  # ... the layers after it reconstruct
    assert expected in capsys.readouterr().out and expected in (bad / "report.md").read_text()


def test_the_failing_inputs_are_those_whose_scale_collapses() -> None:
    """A coupling whose scale collapses only where its conditioning input ``x1[0]`` is small: the report lists every
    input whose scale underflows to 0 (non-finite reconstruction) and none whose scale stays above 0.05 (round-off
    amplified at most 20 times). In between, a scale of 1e-17 already loses ``x2`` to the later layers' round-off."""
    torch.manual_seed(0)
    head, tail = DenseFlow(4, steps=2, hidden=8, zero_init=False, seed=3), DenseFlow(4, steps=1, hidden=8, seed=4)
    net = nn.Linear(2, 4)
    with torch.no_grad():
        net.weight.zero_(), net.bias.zero_()
        net.weight[1::2, 0] = 60.0
        net.bias[1::2] = -20.0  # raw scale + 2 = 60 x1[0] - 18: below -104 (0 in float32) where x1[0] < -1.43
    coupling = AffineCoupling(4, net=net, scale_fn="sigmoid")
    flow = Sequential(head, coupling, tail).eval()
    x = torch.randn(200, 4, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        s = coupling.scale_shift(head(x)[0][:, :2])[0].amin(dim=1)
    zero = set(torch.nonzero(s == 0).reshape(-1).tolist())
    safe = set(torch.nonzero(s > 0.05).reshape(-1).tolist())
    assert 10 < len(zero) < 100 and len(safe) > 60  # 17 and 81 (x1 is the ActNorm-standardised first entry)
    subject = Subject("partial", "factory", flow, "test", (4,), {"data": x})
    m = make_report(subject, Options(attack_steps=0, layer_inputs=8), noise=[])["measurement"]
    result = m["sets"]["data"]
    failing = set(result["failing_indices"])
    assert zero <= failing and not (failing & safe)
    assert result["nonfinite"] >= len(zero) and m["layers"]["breaks_at"] == "1:AffineCoupling"
    assert set(m["layers"]["indices"]) <= failing


def test_the_memory_saving_gradient_check_agrees_on_a_healthy_flow_and_not_on_a_collapsed_one(
        factories: ModuleType) -> None:
    checks = {}
    for name in ("healthy", "broken"):
        flow, x = getattr(factories, name)()
        subject = Subject(name, "factory", flow, "test", (4,), {"data": x})
        m = make_report(subject, Options(attack_steps=0, layer_inputs=0, kappa=False, gradient_inputs=4),
                        noise=[])["measurement"]
        checks[name] = m["gradient_check"]
    assert checks["healthy"]["agreed"] and float(checks["healthy"]["angle"]) < 1e-3
    assert not checks["broken"]["agreed"]


# --------------------------------------------------------------------------------------------------------------
# The files: HTML, Markdown, JSON
# --------------------------------------------------------------------------------------------------------------
class _Page(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.external: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        values = dict(attrs)
        if tag == "img":
            self.images.append(values.get("src") or "")
        for key in ("src", "href"):
            if values.get(key) and not str(values[key]).startswith("data:"):
                self.external.append(str(values[key]))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_the_html_parses_embeds_its_figures_and_the_json_round_trips(factories: ModuleType, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "r"
    assert main(["report_models:broken", "--out", str(out), *FAST]) == 0
    page = _Page()
    page.feed((out / "report.html").read_text())
    page.close()
    assert page.tags[:1] == ["html"] and "table" in page.tags and page.external == []
    assert len(page.images) == 2
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    text = "".join(page.text)
    report = read(out)
    assert report["measurement"]["layers"]["breaks_at"] in text and "non-invertible" in text
    # every number is in the JSON, strict JSON (non-finite values as strings), and rendering from it is the same
    assert json.loads((out / "report.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c}")) == report
    assert report["measurement"]["sets"]["factory-data"]["worst"] == "inf"
    markdown, page_again, pngs = render_report(report)
    assert markdown == (out / "report.md").read_text() and set(pngs) == {"errors", "layers"}
    assert all((out / "figures" / f"{name}.png").is_file() for name in pngs)
    assert "![" in markdown and "figures/layers.png" in markdown


def test_write_report_round_trips_through_its_json(tmp_path: Path) -> None:
    flow = DenseFlow(4, steps=2, hidden=8, zero_init=False)
    subject = Subject("dense", "factory", flow, "test", (4,), {"normal": torch.randn(32, 4)})
    report = make_report(subject, Options(attack_steps=2, attack_inputs=2, layer_inputs=2), noise=["uniform"],
                         n_noise=8)
    paths = write_report(report, tmp_path, figures=False)
    again = json.loads(paths["json"].read_text())
    assert again == report and render_report(again, figures=False)[0] == paths["markdown"].read_text()
    assert set(again["measurement"]["sets"]) == {"normal", "uniform"} and again["measurement"]["sets"]["uniform"][
        "n"] == 8


# --------------------------------------------------------------------------------------------------------------
# Every kind of MODEL
# --------------------------------------------------------------------------------------------------------------
def test_a_factory_with_a_state_dict_and_npy_inputs(factories: ModuleType, tmp_path: Path) -> None:
    flow, x = factories.broken()
    torch.save(flow.state_dict(), tmp_path / "broken.pt")
    np.save(tmp_path / "inputs.npy", x.numpy())
    out = tmp_path / "r"
    args = ["report_models:bare", "--state-dict", str(tmp_path / "broken.pt"), "--data", str(tmp_path / "inputs.npy"),
            "--noise", "--out", str(out), "--fail-on", "non-invertible", *FAST]
    assert main(args) == 1  # the bare (healthy) flow with the broken weights
    m = read(out)["measurement"]
    assert list(m["sets"]) == ["inputs"] and m["sets"]["inputs"]["nonfinite"] == 96
    assert main(["report_models:bare", "--data", str(tmp_path / "inputs.npy"), "--noise", "--out",
                 str(tmp_path / "ok"), "--fail-on", "non-invertible", *FAST]) == 0


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A classification run folder of the main job (the quick preset: one epoch, seconds)."""
    from experiments.classification import STUDY

    out = tmp_path_factory.mktemp("runs") / "quick"
    assert STUDY.main(["--quick", "--coupling", "affine", "--permutation", "conv", "--out", str(out)]) == 0
    return out


def test_a_classification_run_folder_with_no_other_flag(run_folder: Path, capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    assert main([str(run_folder), "--no-progress", "--attack-steps", "2"]) == 0
    report = read(run_folder / "report")
    m = report["measurement"]
    assert list(m["sets"]) == ["digits-test", "gaussian", "uniform", "rademacher", "constant"]
    assert m["sets"]["digits-test"]["n"] == 359 and report["model"]["input_shape"] == [1, 8, 8]
    assert report["model"]["kind"] == "run" and "checkpoints/latest.pt" in report["model"]["source"]
    assert m["sets"]["digits-test"]["kappa"]["worst"]["method"] == "exact"
    assert "digits-test" in capsys.readouterr().out
    # a checkpoint file of the run names the same model
    assert main([str(run_folder / "checkpoints" / "latest.pt"), "--no-progress", "--noise", "--attack-steps", "0",
                 "--layer-inputs", "0", "--data", "default", "--data", "digits", "--out", str(run_folder / "r2")]) == 0
    again = read(run_folder / "r2")["measurement"]
    assert again["sets"]["digits-test"]["errors"] == m["sets"]["digits-test"]["errors"]
    assert again["sets"]["digits"]["n"] == 1797 and "gradient_check" not in again  # not a --mem-saving run


def loader_test(name: str) -> ModuleType:
    """One of the loader test modules (their reference implementations write the synthetic checkpoints)."""
    key = f"_report_ref_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, NUMERICAL / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


SMALL = ["--no-progress", "--noise", "uniform", "--n-noise", "6", "--layer-inputs", "2", "--attack-steps", "0",
         "--no-figures", "--samples", "4"]


def test_synthetic_y0ast_glow_folders_healthy_and_underflowing(tmp_path: Path) -> None:
    ref = loader_test("test_loader_y0ast_glow")
    good = ref.write_checkpoint(ref.build_reference(), tmp_path / "good")
    broken = ref.build_reference()
    with torch.no_grad():
        for name, p in broken.named_parameters():
            if name.endswith("block.4.conv.bias"):
                p[1::2] = -200.0  # every coupling's scale = sigmoid(-198) = 0 in float32
    bad = ref.write_checkpoint(broken, tmp_path / "bad")
    assert main([str(good), "--out", str(tmp_path / "rg"), "--fail-on", "non-invertible", *SMALL]) == 0
    assert main([str(bad), "--out", str(tmp_path / "rb"), "--fail-on", "non-invertible", *SMALL]) == 1
    m, healthy = read(tmp_path / "rb")["measurement"], read(tmp_path / "rg")
    assert healthy["model"]["kind"] == "y0ast-glow" and m["sets"]["uniform"]["nonfinite"] == 6
    assert "AffineCoupling" in m["layers"]["breaks_at"]
    # samples of a generative flow: drawn by default for y0ast files (4 here), judged like any set
    assert healthy["measurement"]["samples"] == {"n": 4, "nonfinite": 0}
    assert healthy["measurement"]["sets"]["samples"]["label"] == "invertible"
    assert m["sets"]["samples"]["label"] == "non-invertible"


def test_a_synthetic_rtqichen_residual_flow_file(tmp_path: Path) -> None:
    ref = loader_test("test_loader_resflow")
    path = ref.write_checkpoint(ref.build_reference(), tmp_path / "cifar10_resflow_2-2-2.pth")
    assert main([str(path), "--out", str(tmp_path / "r"), "--no-kappa", *SMALL]) == 0
    report = read(tmp_path / "r")
    assert report["model"]["kind"] == "rtqichen-resflow" and report["measurement"]["label"] == "invertible"
    assert report["model"]["input_shape"] == [3, 8, 8]
    # the residual blocks' fixed-point inverses report how they ended, per layer and in sum
    solved = [r["inverse_solver"] for r in report["measurement"]["layers"]["rows"] if "inverse_solver" in r]
    conv = report["measurement"]["layers"]["convergence"]
    assert len(solved) == conv["blocks"] >= 6 and conv["not_converged"] == 0  # 2-2-2 blocks + the FC blocks
    assert all(s["converged"] and s["iterations"] >= 2 for s in solved)
    assert "iterations" in (tmp_path / "r" / "report.md").read_text()
    # negative control: one iteration per inverse cannot converge, and the report says so instead of raising
    from invertible import iterative_inverse
    from invertible.loaders import load_resflow

    flow = load_resflow(path)
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    subject = Subject("resflow", "rtqichen-resflow", flow, "test", (3, 8, 8), {"unit": x})
    with iterative_inverse(max_iter=1):
        m = make_report(subject, Options(attack_steps=0, kappa=False, layer_inputs=2), noise=[])["measurement"]
    conv = m["layers"]["convergence"]
    assert conv["blocks"] > 0 and conv["not_converged"] == conv["blocks"]


# --------------------------------------------------------------------------------------------------------------
# Bad input: exit status 2, a message naming the problem, nothing written
# --------------------------------------------------------------------------------------------------------------
def _bad(args: list[str], out: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert main([*args, "--out", str(out), "--no-progress"]) == 2
    assert not out.exists()
    return capsys.readouterr().err


def test_bad_models_and_inputs_are_usage_errors(factories: ModuleType, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "never"
    assert "no such file or folder" in _bad([str(tmp_path / "missing.pt")], out, capsys)
    torch.save({"weights": [1, 2]}, tmp_path / "foreign.pt")
    assert "not a checkpoint the report knows" in _bad([str(tmp_path / "foreign.pt")], out, capsys)
    torch.save({"flow.layers.1.x": torch.ones(2)}, tmp_path / "good.pt")
    (tmp_path / "truncated.pt").write_bytes((tmp_path / "good.pt").read_bytes()[:50])
    assert "truncated or damaged" in _bad([str(tmp_path / "truncated.pt")], out, capsys)
    (tmp_path / "empty.pth").write_bytes(b"")
    assert "empty" in _bad([str(tmp_path / "empty.pth")], out, capsys)
    assert "has no attribute 'nope'" in _bad(["report_models:nope"], out, capsys)
    assert "cannot import" in _bad(["no_such_package.models:flow"], out, capsys)
    assert "not an invertible.InvertibleModule" in _bad(["report_models:not_a_flow"], out, capsys)
    assert "input shape is unknown" in _bad(["report_models:shapeless"], out, capsys)
    np.save(tmp_path / "wrong.npy", np.zeros((5, 3), dtype=np.float32))
    assert "do not fit the flow's input shape (4,)" in _bad(["report_models:healthy", "--data",
                                                            str(tmp_path / "wrong.npy")], out, capsys)
    assert "no such file" in _bad(["report_models:healthy", "--data", str(tmp_path / "nope.npy")], out, capsys)
    # a flow whose input shape is unknown until the inputs come: it refuses them, before anything is measured
    assert "the flow refuses the inputs of set 'wrong'" in _bad(["report_models:shapeless", "--data",
                                                                str(tmp_path / "wrong.npy"), "--noise"], out, capsys)
    torch.save(nn.Linear(2, 2).state_dict(), tmp_path / "other.pt")
    assert "does not fit the model" in _bad(["report_models:healthy", "--state-dict", str(tmp_path / "other.pt")],
                                            out, capsys)
    assert "unknown noise set 'pink'" in _bad(["report_models:healthy", "--noise", "pink"], out, capsys)
    assert "--state-dict goes with" in _bad([str(tmp_path / "good.pt"), "--state-dict", "x"], out, capsys)
    with pytest.raises(SystemExit) as exc:  # argparse's own usage errors: status 2 too
        main(["report_models:healthy", "--rtol", "-1"])
    assert exc.value.code == 2


def test_a_run_folder_without_its_checkpoint_is_a_usage_error(run_folder: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "never"
    assert "has no checkpoints/iter_7.pt" in _bad([str(run_folder), "--checkpoint", "iter_7"], out, capsys)
    folder = tmp_path / "notrun"
    folder.mkdir()
    assert "without config.json" in _bad([str(folder)], out, capsys)


# --------------------------------------------------------------------------------------------------------------
# The console script and the progress counter
# --------------------------------------------------------------------------------------------------------------
def test_the_console_script_names_the_cli() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]
    module, _, attr = project["scripts"]["invertible-report"].partition(":")
    assert getattr(importlib.import_module(module), attr) is main


def test_without_tqdm_the_progress_is_a_counter_on_stderr(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from invertible.report.progress import Progress

    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm now raises ImportError
    bar = Progress(2)
    bar.step("first")
    bar.step("second")
    bar.close()
    err = capsys.readouterr().err
    assert "[1/2] first" in err and "[2/2] second" in err and err.endswith("\n")
    silent = Progress(2, enabled=False)
    silent.step("x")
    silent.close()
    assert capsys.readouterr().err == ""
