"""The machinery every report shares (experiments.reports.common): numbers, tables, runs as data and how missing
ones are made, claims and their verdict rules, the library's invertibility word, fragments, figures, the page and
its footer, and the rule that keeps run results out of hand-written prose (checked on every report)."""

from __future__ import annotations

import doctest
import importlib
import json
import pkgutil
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import experiments
import experiments.reports
from experiments.reports import common
from experiments.reports.common import (Claim, ClaimText, Criterion, Figures, Fragments, Page, Report,
                                        ReportError, Runs, RunSpec, claims_table, fmt, judge, judge_errors,
                                        load_texts, make_runs, seeded, state, stored)
from experiments.reports.common.quoted import quoted_numbers, scan_markdown, scan_python
from invertible import ActNorm
from invertible.diagnostics import NONINVERTIBLE_RTOL, invertibility_verdict, judge_reconstructions

PAGES = experiments.reports.PAGES
COMMON_MODULES = [m.name for m in pkgutil.iter_modules(common.__path__)]


@pytest.mark.parametrize("module", COMMON_MODULES)
def test_docstring_examples_of_the_common_modules_hold(module: str) -> None:
    result = doctest.testmod(importlib.import_module(f"experiments.reports.common.{module}"))
    assert result.failed == 0


PAGE_MODULES = [m.name for m in pkgutil.walk_packages(experiments.reports.__path__, "experiments.reports.")
                if not m.name.startswith("experiments.reports.common") and not m.name.endswith("__main__")]


@pytest.mark.parametrize("module", PAGE_MODULES)
def test_docstring_examples_of_the_page_modules_hold(module: str) -> None:
    assert doctest.testmod(importlib.import_module(module)).failed == 0


def test_the_common_modules_have_examples() -> None:  # the doctest test above cannot pass vacuously everywhere
    attempted = sum(doctest.testmod(importlib.import_module(f"experiments.reports.common.{m}")).attempted
                    for m in COMMON_MODULES)
    assert attempted >= 30


# ----------------------------------------------------------------------------------------------------------------
# Numbers and tables
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("value", "text"), [
    (0.1234, "0.123"), (12.5, "12.5"), (999.4, "999"), (1024, "1024"), (9999.4, "9999"), (12345.0, "1.2e4"),
    (3.5e6, "3.5e6"), (0.01, "0.01"), (0.00999, "1e-2"), (1.2e-7, "1.2e-7"), (-2.5e-5, "-2.5e-5"), ("Infinity", "inf"),
    ("-Infinity", "-inf"), ("NaN", "NaN"), ("nan", "NaN"), (None, "-"), ("", "-"), (0, "0"), ("3.5", "3.5")])
def test_one_number_format_for_every_page(value: Any, text: str) -> None:
    assert fmt(value) == text


def test_a_table_refuses_rows_of_the_wrong_width_and_escapes_pipes() -> None:
    assert common.table(["a", "b"], [["`||x||`", "1"]]).splitlines()[-1] == "| `\\|\\|x\\|\\|` | 1 |"
    with pytest.raises(ValueError, match="row has 1 cells but the header 2"):
        common.table(["a", "b"], [["only one"]])


# ----------------------------------------------------------------------------------------------------------------
# Claims and verdict rules
# ----------------------------------------------------------------------------------------------------------------
CRITERION = Criterion.at_least(100)


def _obs(values: list[float], demo: bool = False) -> list[Any]:
    return [CRITERION.observe(f"run{i}", i, demo, v) for i, v in enumerate(values)]


@pytest.mark.parametrize(("values", "demo", "word", "agrees"), [
    ([300.0, 200.0, 150.0], False, "agrees", True),
    ([300.0, 200.0, 150.0, 900.0, 120.0], False, "agrees", True),
    ([300.0, 200.0], False, "too few seeds", False),         # all showed it, but only two seeds
    ([3.0, 2.0], False, "too few seeds", False),
    ([300.0, 2.0, 150.0], False, "mixed", False),             # negative control of "agrees": one seed did not
    ([3.0, 2.0, 1.0], False, "does not agree", False),
    ([300.0] * 5, True, "small-model demonstration", False),  # quick presets never agree, whatever they show
    ([], False, "not run", False),
])
def test_verdict_rules(values: list[float], demo: bool, word: str, agrees: bool) -> None:
    verdict = Claim("c", CRITERION, _obs(values, demo)).verdict
    assert (verdict.word, verdict.agrees) == (word, agrees)


def test_undetermined_runs_count_for_neither_side_and_demos_are_shown_apart() -> None:
    crit = Criterion.verdict("non-invertible")
    undecided = [crit.judged(f"r{s}", s, False, judge(None, 0, 10)) for s in range(3)]
    assert Claim("c", crit, undecided).verdict.word == "undetermined"
    decided = [crit.judged(f"r{s}", s, False, judge(0.5, 0, 10)) for s in range(3)]
    assert Claim("c", crit, decided + undecided).verdict.word == "agrees"
    assert Claim("c", crit, decided[:2] + undecided).verdict.word == "too few seeds"
    mixed = Claim("c", CRITERION, _obs([300.0, 200.0, 150.0]) + _obs([1.0], demo=True))
    assert mixed.verdict.word == "agrees"
    assert mixed.ours() == ("3 of 3 seeds showed it; median 200 (150 to 300); quick preset (small-model "
                            "demonstration): 0 of 1 seed showed it; 1")


def test_the_claims_table_has_one_row_per_claim_and_needs_every_text() -> None:
    texts = {"c": ClaimText("Kappa grows.", "up to `1e14`", "largest kappa")}
    rows = claims_table([Claim("c", CRITERION, _obs([300.0] * 3), "cpu")], texts).splitlines()
    assert rows[0] == "| claim | paper | ours (seeds) | criterion | verdict |"
    assert rows[2] == ("| Kappa grows. *(cpu)* | up to `1e14` | 3 of 3 seeds showed it; median 300 (300 to 300) | "
                       "largest kappa >= 100 | **agrees** |")
    with pytest.raises(ValueError, match="without a text in claims.md: d"):
        claims_table([Claim("d", CRITERION, ())], texts)


def test_claim_texts_are_read_from_markdown_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "claims.md"
    path.write_text("# title\n\n## a\nclaim: One\ncontinued.\npaper: P\nmeasure: M\n\n## b\nclaim: Two\npaper: Q\n")
    with pytest.raises(ValueError, match="claim 'b' lacks measure"):
        load_texts(path)
    path.write_text(path.read_text() + "measure: N\n")
    assert load_texts(path)["a"] == ClaimText("One continued.", "P", "M")


@pytest.mark.parametrize("page", PAGES)
def test_every_page_has_claim_texts_for_what_it_checks(page: str) -> None:
    texts = load_texts(Path(experiments.reports.__path__[0]) / page / "claims.md")
    assert texts and all(t.claim and t.paper and t.measure for t in texts.values())


# ----------------------------------------------------------------------------------------------------------------
# The invertibility word: the library's one definition
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(20))
def test_judging_from_stored_summaries_agrees_with_the_library_on_the_whole_set(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    relative = 10 ** (torch.rand(50, generator=gen, dtype=torch.float64) * 6 - 8 + seed % 3)
    nonfinite = (torch.rand(50, generator=gen) < 0.03).long()
    full = judge_reconstructions(relative, nonfinite)
    finite = relative[nonfinite == 0]
    summary = judge(float(finite.max()) if finite.numel() else None, int(nonfinite.sum()), 50)
    assert summary.label == full.label
    assert judge_errors(np.where(nonfinite.numpy() > 0, np.inf, relative.numpy())).label == full.label


def test_the_verdict_has_three_words_and_a_condition_number_never_decides() -> None:
    assert judge(NONINVERTIBLE_RTOL * 1.01, 0, 10).label == "non-invertible"
    assert judge(NONINVERTIBLE_RTOL * 0.99, 0, 10, kappa_at_worst=1e12).label == "invertible"
    assert judge(None, 0, 10, kappa_at_worst=1e12).label == "undetermined"
    assert judge(None, 3, 10).label == "non-invertible"
    assert judge("NaN", 0, 10).label == "non-invertible"  # a stored NaN error is a NaN reconstruction
    assert judge(1e-7, nonfinite_share=0.0).label == "invertible"
    assert judge(1e-7, nonfinite_share=0.1).label == "non-invertible"


def test_a_stored_verdict_is_read_and_checked_against_its_numbers() -> None:
    layer = ActNorm(2, data_init=False)
    good = invertibility_verdict(layer, torch.randn(64, 2), kappa_at=1).to_dict()
    with torch.no_grad():
        layer.log_scale.fill_(-110.0)  # exp(-110) underflows to 0 in float32: the inverse is non-finite
    bad = invertibility_verdict(layer, torch.randn(64, 2), kappa_at=0).to_dict()
    assert stored(good).label == "invertible" and stored(good).kappa_at_worst is not None
    assert stored(bad).label == "non-invertible"
    assert common.find_stored({"status": "completed", "verdict": bad}).label == "non-invertible"
    assert common.find_stored({"status": "completed"}) is None
    with pytest.raises(ValueError, match="inconsistent"):
        stored({**bad, "invertible": True})


# ----------------------------------------------------------------------------------------------------------------
# Runs as data, made in-process
# ----------------------------------------------------------------------------------------------------------------
def test_a_run_spec_says_its_command_and_refuses_the_flags_the_report_sets() -> None:
    spec = RunSpec("ood", "ood/s", ("--zoo-dir", "{runs}/zoo/seed={seed}", "--preset", "default", "--n", "100"),
                   seed=2, quick=("--n", "8"))
    assert spec.argv_for(Path("R"), quick=False) == ["--zoo-dir", "R/zoo/seed=2", "--preset", "default", "--n", "100",
                                                     "--seed", "2", "--out", "R/ood/s"]
    assert spec.argv_for(Path("R"), quick=True) == ["--zoo-dir", "R/zoo/seed=2", "--quick", "--n", "8", "--seed", "2",
                                                    "--out", "R/ood/s"]
    for flag in ("--out", "--seed", "--quick", "--resume", "--overwrite"):
        with pytest.raises(ValueError, match=f"{flag} is the report's to set"):
            RunSpec("ood", "x", (flag, "1"))
    specs = seeded("glow", "glow/d", seeds=(0, 1, 2))
    assert [s.in_quick for s in specs] == [True, False, False] and {s.group for s in specs} == {"glow/d"}
    with pytest.raises(ValueError, match="two runs share a folder"):
        Runs(Path("R"), [*specs, specs[0]])


def _fake_study(calls: list[list[str]], status: int = 0, preset: str = "default") -> Any:
    def call(name: str, argv: list[str]) -> int:
        calls.append([name, *argv])
        out = Path(argv[argv.index("--out") + 1])
        if status == 2:
            return 2
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps({"args": {"seed": 0, "preset": preset}}))
        (out / "metrics.json").write_text(json.dumps({"status": "completed" if status == 0 else "diverged",
                                                      "timing": {"cpu_seconds": 1.0}}))
        return status
    return call


def test_missing_runs_are_made_finished_reused_unfinished_resumed(tmp_path: Path, monkeypatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr("experiments.common.study.call", _fake_study(calls))
    specs = [RunSpec("glow", "a"), RunSpec("glow", "b"), RunSpec("glow", "c")]
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "config.json").write_text(json.dumps({"args": {"preset": "default"}}))  # interrupted
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "config.json").write_text(json.dumps({"args": {"preset": "default"}}))
    (tmp_path / "c" / "metrics.json").write_text(json.dumps({"status": "completed", "timing": {}}))  # finished
    assert [state(tmp_path / f) for f in "abc"] == ["missing", "unfinished", "finished"]
    assert make_runs(specs, tmp_path) == {"a": "ran", "b": "resumed", "c": "reused"}
    assert calls == [["glow", "--out", str(tmp_path / "a")], ["glow", "--out", str(tmp_path / "b"), "--resume"]]
    assert make_runs(specs, tmp_path) == {"a": "reused", "b": "reused", "c": "reused"} and len(calls) == 2


def test_a_refused_run_stops_the_report_and_a_failed_one_is_a_result(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("experiments.common.study.call", _fake_study([], status=2))
    with pytest.raises(ReportError, match="refused .exit status 2"):
        make_runs([RunSpec("glow", "a")], tmp_path)
    monkeypatch.setattr("experiments.common.study.call", _fake_study([], status=1))
    assert make_runs([RunSpec("glow", "a")], tmp_path) == {"a": "failed"}


def test_a_quick_run_is_never_taken_for_a_real_one(tmp_path: Path, monkeypatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr("experiments.common.study.call", _fake_study(calls, preset="quick"))
    make_runs([RunSpec("glow", "a")], tmp_path, quick=True)
    with pytest.raises(ReportError, match="holds a run of a quick preset"):
        make_runs([RunSpec("glow", "a")], tmp_path)
    make_runs([RunSpec("glow", "b", ("--preset", "quick"))], tmp_path)  # declared quick: allowed
    assert len(calls) == 2


# ----------------------------------------------------------------------------------------------------------------
# Fragments, figures, pages, the command line
# ----------------------------------------------------------------------------------------------------------------
def test_fragments_fill_in_values_and_refuse_missing_ones(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("Kappa {{ k | fmt }}{% if big %}, large{% endif %}.\n\n\n")
    assert Fragments(tmp_path).render("a", k=3.5e6, big=True) == "Kappa 3.5e6, large."
    with pytest.raises(ValueError, match="'big' is undefined"):
        Fragments(tmp_path).render("a", k=1.0)
    with pytest.raises(ValueError, match="no fragment b.md"):
        Fragments(tmp_path).render("b")


def _png(path: Path, seed: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (60, 1200, 3), dtype=np.uint8)).save(path)
    return path


def test_figures_are_stored_deterministically_and_stale_ones_removed(tmp_path: Path) -> None:
    source = _png(tmp_path / "source.png", 0)
    figures = Figures(tmp_path / "docs" / "page", tmp_path / "docs")
    assert figures.copy(source, "a.png") == "page/a.png"
    first = (tmp_path / "docs" / "page" / "a.png").read_bytes()
    assert Figures(tmp_path / "docs" / "page", tmp_path / "docs").copy(source, "a.png") == "page/a.png"
    assert (tmp_path / "docs" / "page" / "a.png").read_bytes() == first
    _png(tmp_path / "docs" / "page" / "old.png", 1)
    assert figures.remove_stale() == [tmp_path / "docs" / "page" / "old.png"]
    assert (tmp_path / "docs" / "page" / "a.png").is_file()
    with pytest.raises(FileNotFoundError, match="missing.png does not exist"):
        figures.copy(tmp_path / "missing.png", "b.png")


def _report(tmp_path: Path) -> Report:
    folder = tmp_path / "report"
    folder.mkdir()
    (folder / "claims.md").write_text("## c\nclaim: C\npaper: P\nmeasure: M\n")
    (folder / "body.md").write_text("Runs: {{ n }}.\n")

    def write(runs: Runs, page: Page) -> None:
        done = [r for r in runs if r.finished]
        page.claims([Claim("c", CRITERION, [CRITERION.observe(r.name, r.seed, r.demo, r.metrics["kappa"])
                                             for r in done])])
        page.fragment("body", n=len(done))

    return Report("demo", "Demo", tuple(seeded("glow", "demo", seeds=(0, 1, 2))), write, folder)


def _finished_run(folder: Path, seed: int, created: str, kappa: float) -> None:
    folder.mkdir(parents=True)
    env = {"torch": "9.9", "python": "3.99", "git": {"commit": "abcdef0123456789", "dirty": False}}
    (folder / "config.json").write_text(json.dumps({"args": {"seed": seed, "preset": "default"}, "created": created,
                                                    "environment": env}))
    (folder / "metrics.json").write_text(json.dumps({"status": "completed", "kappa": kappa, "timing": {}}))


def test_a_page_opens_with_its_claims_and_its_footer_comes_from_the_runs(tmp_path: Path) -> None:
    report, runs = _report(tmp_path), tmp_path / "runs"
    for seed, day in ((0, "2026-01-02"), (1, "2026-01-05"), (2, "2026-01-03")):
        _finished_run(runs / f"demo/seed={seed}", seed, f"{day}T10:00:00+00:00", 300.0 + seed)
    out = tmp_path / "docs" / "demo.md"
    assert report.main(["--report-only", "--runs", str(runs), "--out", str(out)]) == 0
    text = out.read_text()
    lines = text.splitlines()
    assert lines[0] == "# Demo" and text.index("| claim | paper |") < text.index("Runs: 3.")
    assert "| C | P | 3 of 3 seeds showed it; median 301 (300 to 302) | M >= 100 | **agrees** |" in text
    assert "made between 2026-01-02 and 2026-01-05 with torch\n9.9 and python 3.99 at commit `abcdef0123`" in text
    assert f"`python -m experiments.reports.demo --runs {runs}` from 3 finished of 3 declared runs" in text
    before = text
    assert report.main(["--report-only", "--runs", str(runs), "--out", str(out)]) == 0
    assert out.read_text() == before  # byte-identical from the same runs


def test_a_page_without_runs_says_so_and_a_page_without_claims_is_refused(tmp_path: Path) -> None:
    report = _report(tmp_path)
    out = tmp_path / "demo.md"
    assert report.main(["--report-only", "--runs", str(tmp_path / "none"), "--out", str(out)]) == 0
    assert "| not run | M >= 100 | not run (no finished run) |" in out.read_text()
    empty = Report("demo", "Demo", report.runs, lambda runs, page: page.add("no claims"), report.folder)
    with pytest.raises(ValueError, match="opens with its claims table"):
        empty.main(["--report-only", "--runs", str(tmp_path / "none"), "--out", str(out)])


def test_quick_needs_its_own_folders_and_list_shows_each_run(tmp_path: Path, capsys) -> None:
    report = _report(tmp_path)
    with pytest.raises(SystemExit) as exc:
        report.main(["--quick"])
    assert exc.value.code == 2 and "--quick needs its own --runs and --out" in capsys.readouterr().err
    assert report.main(["--list", "--runs", str(tmp_path / "r")]) == 0
    assert capsys.readouterr().out.splitlines()[0] == (f"missing    python -m experiments.glow --seed 0 --out "
                                                       f"{tmp_path / 'r' / 'demo' / 'seed=0'}")


def test_a_model_whose_name_has_brackets_gets_its_figure_on_the_attack_page(tmp_path: Path) -> None:
    """The pages find a model's figures by the study's own file name for it (``image_flows.slug``: a run of
    characters other than letters and digits becomes one ``_``); a per-character replacement would look for
    ``attack_affine_glow__y0ast.png`` and leave the figure out."""
    attack = importlib.import_module("experiments.reports.attack").REPORT
    run = tmp_path / "runs" / "attack" / "paper" / "seed=0"
    _finished_run(run, 0, "2026-01-02T10:00:00+00:00", 0.0)
    config = json.loads((run / "config.json").read_text())
    config["args"].update(images=2, steps=3, unroll=5, accurate_iterations=50)
    (run / "config.json").write_text(json.dumps(config))
    model = {"radius": 0.03, "clean_error_max": 1e-6, "max_error": 2e-6, "growth_max": 2.0, "first_nonfinite_step": -1,
             "images_broken": 0, "first_nonfinite_per_image": [-1, -1]}
    (run / "metrics.json").write_text(json.dumps({"status": "completed", "timing": {},
                                                  "models": {"affine Glow (y0ast)": model}}))
    (run / "plots").mkdir()
    _png(run / "plots" / "attack_curves.png", 0)
    _png(run / "plots" / "attack_affine_glow_y0ast.png", 1)
    out = tmp_path / "docs" / "attack.md"
    assert attack.main(["--report-only", "--settings", "paper", "--runs", str(tmp_path / "runs"), "--out",
                        str(out)]) == 0
    assert "](attack/paper_attack_affine_glow_y0ast.png)" in out.read_text()
    assert (tmp_path / "docs" / "attack" / "paper_attack_affine_glow_y0ast.png").is_file()


# ----------------------------------------------------------------------------------------------------------------
# No number quoted from a run in prose
# ----------------------------------------------------------------------------------------------------------------
REPORTS_DIR = Path(experiments.reports.__path__[0])


@pytest.mark.parametrize(("text", "found"), [
    ("kappa reached 3.9e6 at iteration 180", ["3.9e6", "180"]),
    ("a reconstruction off by 2.7 on 26 training images", ["2.7", "26"]),
    ("accuracy 0.975 against 0.994", ["0.975", "0.994"]),
    ("10,000 points", ["10,000"]),
    ("kappa `3.9e6` in code, {{ k | fmt }} from the data, section 2.3, claims 7 and 8", []),
    ("2-D flows, 9 round trips, 3 seeds, x0.1 decay", []),
    ("```\npython -m x --lr 1e-4\n```\n", []),
    ("![f](toy/cpu_128.png)", []),
])
def test_the_number_rule(text: str, found: list[str]) -> None:
    assert quoted_numbers(text) == found


def test_the_number_rule_in_python_literals(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text('"""Doc: kappa `1e6`.\n\n>>> f(0.123)\n\'0.123\'\n"""\n'
                      'ARGV = ["--lr", "1e-4", "--epochs", "30"]\n'
                      'def f(x):\n    return f"{x:.3g} of 128 images"\n'
                      'TEXT = "kappa ends at 7.8e4"\n')
    assert sorted(line.split(": ")[1] for line in scan_python(module)) == ["128", "7.8e4"]
    assert scan_python(module, allowed={"128", "7.8e4"}) == []


def _prose_files(page: str) -> list[Path]:
    return sorted((REPORTS_DIR / page).glob("*.md")) + sorted((REPORTS_DIR / page).glob("*.py"))


@pytest.mark.parametrize("page", [*PAGES, "common"])
def test_no_fragment_or_report_module_quotes_a_number_from_a_run(page: str) -> None:
    allowed = importlib.import_module(f"experiments.reports.{page}").QUOTED if page != "common" else {}
    found = [hit for path in _prose_files(page)
             for hit in (scan_markdown(path, allowed) if path.suffix == ".md" else scan_python(path, allowed))]
    found += scan_python(REPORTS_DIR / "__init__.py") if page == "common" else []
    assert found == []


@pytest.mark.parametrize("page", PAGES)
def test_every_declared_constant_is_quoted_somewhere(page: str) -> None:
    allowed = importlib.import_module(f"experiments.reports.{page}").QUOTED
    unused = [n for n in allowed
              if not any(n in quoted_numbers(p.read_text()) for p in _prose_files(page) if p.suffix == ".md")
              and not any(f"{path}:" in hit and hit.endswith(f": {n}")
                          for path in _prose_files(page) if path.suffix == ".py" for hit in scan_python(path))]
    assert unused == []


def test_the_scan_catches_a_measured_number_written_into_a_fragment(tmp_path: Path) -> None:
    source = REPORTS_DIR / "classification" / "findings.md"
    copy = tmp_path / "findings.md"
    copy.write_text(source.read_text() + "\nThe affine model ended with kappa 7.8e4 at test accuracy 0.975.\n")
    allowed = importlib.import_module("experiments.reports.classification").QUOTED
    assert [hit.split(": ")[1] for hit in scan_markdown(copy, allowed)] == ["7.8e4", "0.975"]


def test_the_contributing_example_of_a_report_runs_against_the_api() -> None:
    text = (Path(experiments.__path__[0]).parents[1] / "CONTRIBUTING.md").read_text()
    code = re.findall(r"```python\n(.*?)```", text, re.S)[-1]
    assert "REPORT = Report(" in code
    namespace: dict[str, Any] = {"__doc__": "An example.", "__name__": "experiments.reports.example"}
    exec(compile(code.replace("from ..common", "from experiments.reports.common")
                 .replace("Path(__file__).parent", "Path('.')"), "CONTRIBUTING.md", "exec"), namespace)
    report = namespace["REPORT"]
    assert report.settings == ["default", "long"] and len(report.runs) == 6

    class Run:
        name, demo, metrics = "r", False, {"worst_relative": 1e-7, "nonfinite": 0, "kappa": 300.0}

        def __init__(self, seed: int) -> None:
            self.seed = seed

    claims = namespace["claims"]([Run(s) for s in range(3)], "default setting", "default")
    assert [(c.id, c.verdict.word) for c in claims] == [("mystudy-invertible", "agrees"), ("mystudy-kappa", "agrees")]
