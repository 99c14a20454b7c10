"""``python -m invertible.verify`` and the adapters of the peer libraries.

The catalogue, the page writer and the classification run without the peers; the tests that build peer layers
skip, with the reason, where a library is not installed (CI installs ``.[test,experiments]`` only; the peers need
``pip install -e ".[peers]"``).
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from invertible.adapters import Callables
from invertible.testing import check_invertible
from invertible.verify.catalog import ENTRIES, LIBRARIES, Entry
from invertible.verify.findings import FINDINGS, KINDS, classify
from invertible.verify.run import Result, _check, markdown

DT = torch.float64


def _needs(library: str) -> None:
    if importlib.util.find_spec(library) is None:
        pytest.skip(f"{library} is not installed (pip install -e \".[peers]\")")


def test_the_catalogue_covers_at_least_30_layers_of_the_four_libraries() -> None:
    per = {lib: sum(e.library == lib for e in ENTRIES) for lib in LIBRARIES}
    assert sum(per.values()) >= 30 and all(n >= 5 for n in per.values()), per
    assert len({e.key for e in ENTRIES}) == len(ENTRIES), "duplicate catalogue keys"


def test_every_finding_names_a_catalogue_entry_and_a_class() -> None:
    keys = {e.key for e in ENTRIES}
    assert [f.key for f in FINDINGS if f.key not in keys] == []
    assert all(f.kind in KINDS and f.dtypes for f in FINDINGS)


def _entry(name: str, layer: Callables) -> Entry:
    return Entry("FrEIA", name, lambda: (layer, torch.randn(3, 2, dtype=DT), None))


def test_the_page_counts_passes_and_failures_and_lists_unclassified_ones() -> None:
    scale = torch.tensor([2.0, 0.5], dtype=DT)
    good = Callables(lambda x: (x * scale.to(x), scale.to(x).log().sum().expand(len(x))),
                     lambda y: (y / scale.to(y), -scale.to(y).log().sum().expand(len(y))))
    wrong = Callables(good.fns[0], lambda y: (y / scale.to(y), 1e-3 - scale.to(y).log().sum().expand(len(y))))
    results = [_check(_entry("Good", good), "float64"), _check(_entry("Wrong", wrong), "float64")]
    assert [r.status for r in results] == ["pass", "fail"]  # negative control: the wrong inverse log-det
    assert "logdet_inverse" in results[1].failures[0]
    page = markdown(results, {"FrEIA": "0.2", "zuko": None}, "python -m invertible.verify")
    assert "| FrEIA | 2 | 1 / 1 |" in page
    assert "| zuko | not installed |" in page
    assert "Unclassified failures: 1." in page and "**unclassified**" in page
    assert "|logdet_inv(y) + logdet(f^-1(y))| is" in page  # the magnitude is on the page


def test_a_classified_failure_carries_its_class_and_reproduction() -> None:
    entry = next(e for e in ENTRIES if e.key == "FrEIA.LearnedElementwiseScaling")
    fake = Result(entry, "float64", "fail", ["logdet_inverse: |...| is 0.5"])
    assert fake.finding is classify(entry.key, "float64") and fake.finding.kind == "defect"
    page = markdown([fake], {"FrEIA": "0.2"}, "cmd")
    assert "Unclassified failures: 0." in page and "def _learned_scaling" in page


def test_a_build_that_raises_is_an_error_result_not_a_crash() -> None:
    def build() -> tuple:
        raise RuntimeError("torch.qr was removed")

    result = _check(Entry("nflows", "Broken", build), "float64")
    assert result.status == "error" and "torch.qr was removed" in result.failures[0]


def test_freia_soft_permutation_is_found_unaided() -> None:
    _needs("FrEIA")
    module, x, _ = next(e for e in ENTRIES if e.key == "FrEIA.AllInOneBlock(permute_soft=True)").build()
    report = check_invertible(module, x, raise_on_failure=False)
    assert {"roundtrip_forward", "logdet_exact"} <= set(report.failed), report
    assert 1e-8 < report.measured["roundtrip_forward"] < 1e-5
    assert 1e-9 < report.measured["logdet_exact"] < 1e-6
    hard, x, _ = next(e for e in ENTRIES if e.key == "FrEIA.AllInOneBlock(permute_soft=False)").build()
    assert check_invertible(hard, x, raise_on_failure=False).ok  # control: the same block, hard permutation


def test_normflows_float32_log_det_accumulation_is_found_unaided() -> None:
    _needs("normflows")
    module, x, _ = next(e for e in ENTRIES if e.key == "normflows.NormalizingFlow.forward_and_log_det").build()
    report = check_invertible(module, x, raise_on_failure=False)
    assert "shapes" in report.failed and any("logdet is torch.float32" in f for f in report.failures), report
    assert "logdet_exact" in report.failed and 1e-9 < report.measured["logdet_exact"] < 1e-5
    layer, x, _ = next(e for e in ENTRIES if e.key == "normflows.AffineCouplingBlock").build()
    assert check_invertible(layer, x, raise_on_failure=False).ok  # control: one of its layers alone


@pytest.mark.parametrize("key", ["FrEIA.PermuteRandom", "FrEIA.GLOWCouplingBlock(conditional)",
                                 "nflows.AffineCouplingTransform(context)", "normflows.MaskedAffineFlow",
                                 "zuko.MaskedAutoregressiveTransform(affine, context)"])
def test_each_adapter_passes_on_a_sound_peer_layer(key: str) -> None:
    entry = next(e for e in ENTRIES if e.key == key)
    _needs(LIBRARIES[entry.library][0])
    module, x, context = entry.build()
    assert check_invertible(module, x, context=context, raise_on_failure=False).ok


def test_the_reproductions_run_standalone_and_show_what_their_findings_say(capsys) -> None:  # type: ignore[no-untyped-def]
    for lib in ("FrEIA", "nflows", "normflows", "zuko"):
        _needs(lib)
    cheap = [f for f in FINDINGS if not f.key.startswith("zuko.CNF")]  # the CNF's runs two ODE solves (~10 s)
    shown = {}
    for f in cheap:
        exec(compile(f.source, f.key, "exec"), {"__name__": "__main__"})  # the script printed on the page
        shown[f.key] = capsys.readouterr().out
    assert all(s.strip() and "raised" not in s for s in shown.values()), shown
    assert "float32" in shown["normflows.NormalizingFlow.forward_and_log_det"]
    assert "RuntimeError" in shown["nflows.NaiveLinear"]


def test_the_command_writes_the_page(tmp_path) -> None:  # type: ignore[no-untyped-def]
    _needs("FrEIA")
    from invertible.verify.__main__ import main

    out = tmp_path / "peers.md"
    assert main(["--only", "LearnedElementwiseScaling", "--dtypes", "float64", "--out", str(out)]) == 0
    page = out.read_text()
    assert "| FrEIA.LearnedElementwiseScaling | **fail**: logdet_exact_inverse, logdet_inverse | defect |" in page
    assert "Output: forward log-det" in page  # the reproduction ran


def test_the_command_refuses_unknown_dtypes_and_empty_selections(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from invertible.verify.__main__ import main

    with pytest.raises(SystemExit):
        main(["--dtypes", "float16", "--out", str(tmp_path / "x.md")])
    with pytest.raises(SystemExit):
        main(["--only", "no such layer", "--out", str(tmp_path / "x.md")])
    assert not (tmp_path / "x.md").exists()
