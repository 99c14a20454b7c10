"""Every report end to end on small runs: ``--quick`` makes its runs at the studies' quick presets in a temporary
folder and writes its page; ``--report-only`` then writes the same page and figures byte for byte, twice. The page
opens with its claims table, counts no quick run as agreement, links only figures that exist, and takes its dates
and versions from the runs."""

from __future__ import annotations

import hashlib
import importlib
import json
import re
from pathlib import Path

import pytest
import torch

import experiments.reports

PAGES = experiments.reports.PAGES


pytestmark = pytest.mark.usefixtures("isolated_run")


def _digests(docs: Path) -> dict[str, str]:
    return {str(p.relative_to(docs)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(docs.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize("name", PAGES)
def test_a_report_makes_its_quick_runs_and_regenerates_its_page_byte_for_byte(name: str, tmp_path: Path) -> None:
    report = importlib.import_module(f"experiments.reports.{name}").REPORT
    runs, docs = tmp_path / "runs", tmp_path / "docs"
    out = docs / f"{name}.md"
    assert report.main(["--quick", "--runs", str(runs), "--out", str(out)]) == 0
    first = _digests(docs)
    for _ in range(2):
        assert report.main(["--report-only", "--runs", str(runs), "--out", str(out)]) == 0
        assert _digests(docs) == first
    text = out.read_text()
    blocks = text.split("\n\n")
    assert blocks[0] == f"# {report.title}"
    assert blocks[2].startswith("| claim | paper | ours (seeds) | criterion | verdict |")
    verdicts = [row.rsplit("|", 2)[-2].strip() for row in blocks[2].splitlines()[2:]]
    assert verdicts and all(v.startswith(("small-model demonstration", "not run")) for v in verdicts), verdicts
    assert any(v.startswith("small-model demonstration") for v in verdicts)  # the quick runs were read
    # every study stores what the library's verdict needs (relative errors or the verdict itself), so no finite run
    # is left undetermined for want of them (each page said so for some run before the studies stored them)
    assert "the run stored no" not in text
    linked = set(re.findall(r"\]\(([^)]+\.png)\)", text))
    assert linked and all((docs / link).is_file() for link in linked)
    assert {str(p.relative_to(docs)) for p in docs.rglob("*.png")} == linked
    made = sorted({json.loads(p.read_text())["created"][:10] for p in runs.rglob("config.json")
                   if (p.parent / "metrics.json").is_file()})
    assert f"made on {made[0]}" in text or f"between {made[0]}" in text
    assert f"torch\n{torch.__version__}" in text or f"torch {torch.__version__}" in text


def test_report_only_on_an_empty_folder_writes_a_page_of_runs_not_made(tmp_path: Path) -> None:
    report = importlib.import_module("experiments.reports.glow").REPORT
    out = tmp_path / "glow.md"
    assert report.main(["--report-only", "--runs", str(tmp_path / "none"), "--out", str(out)]) == 0
    text = out.read_text()
    assert "not run (no finished run)" in text and "*No finished run yet (3 declared).*" in text
    assert not (tmp_path / "none").exists()  # --report-only ran nothing
