"""``python -m invertible.report MODEL``: a stability report for any trained flow.

One answer to "is it invertible where it will be used, and if not, which layer, where and why": the library's
verdict (:mod:`invertible.diagnostics.verdict`) on every input set, condition numbers at the worst and at a typical
input, a per-layer table of analytic bounds beside measured values naming the worst-conditioned inverse and the
layer where reconstruction breaks, and the invertibility attack; written as ``report.json`` (every number),
``report.md`` and a self-contained ``report.html``.

- :mod:`~invertible.report.sources`: what ``MODEL`` can be (run folders, y0ast Glow, rtqichen Residual Flow,
  ``package.module:factory``);
- :mod:`~invertible.report.inputs`: the input sets (the model's data, ``.npy`` files, noise sets);
- :mod:`~invertible.report.measure`: the measurements, as data;
- :mod:`~invertible.report.render` and :mod:`~invertible.report.figures`: Markdown, HTML, terminal summary;
- :mod:`~invertible.report.cli`: the command line (exit status 0 invertible, 1 non-invertible with
  ``--fail-on non-invertible``, 2 usage errors).

Example:
    >>> import torch, tempfile
    >>> from invertible.models import DenseFlow
    >>> from invertible.report import Options, Subject, make_report, write_report
    >>> flow = DenseFlow(4, steps=2, hidden=8, zero_init=False).eval()
    >>> subject = Subject("dense", "factory", flow, "a DenseFlow", (4,), {"normal": torch.randn(64, 4)})
    >>> report = make_report(subject, Options(attack_steps=0), noise=[])
    >>> report["measurement"]["label"]
    'invertible'
    >>> sorted(p.name for p in write_report(report, tempfile.mkdtemp(), figures=False).values())
    ['report.html', 'report.json', 'report.md']
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from ..base import allow_nonfinite
from .inputs import NOISE_SETS, build_sets
from .measure import Options, add_samples, clean, measure, n_steps
from .progress import Progress
from .render import blocks, summary, to_html, to_markdown
from .sources import ReportError, Subject, load_subject

__all__ = ["NOISE_SETS", "Options", "ReportError", "Subject", "load_subject", "make_report", "render_report",
           "summary", "write_report"]

FORMAT = "invertible-report"


def make_report(subject: Subject, opts: Options | None = None, *, data: list[str] | None = None,
                noise: list[str] | None = None, n_noise: int = 256, limit: int | None = None, seed: int = 0,
                command: str = "invertible.report.make_report", load_s: float = 0.0,
                progress: bool = False) -> dict[str, Any]:
    """Measure ``subject`` on its input sets and return the report as JSON-able data (the ``report.json``)."""
    opts = opts or Options()
    sets = build_sets(subject, data=data, noise=list(NOISE_SETS) if noise is None else noise, n_noise=n_noise,
                      seed=seed, limit=limit)
    sampled = add_samples(subject.flow, sets, opts.samples, seed) if opts.samples > 0 else None
    for name, x in sets.items():  # a flow that refuses the inputs is a usage error, said before measuring
        try:
            with torch.no_grad(), allow_nonfinite():
                subject.flow(x[:1].nan_to_num())
        except (ValueError, TypeError, RuntimeError) as exc:
            raise ReportError(f"the flow refuses the inputs of set {name!r} (shape {tuple(x.shape[1:])}, "
                              f"{x.dtype}): {str(exc).splitlines()[0]}") from exc
    bar = Progress(n_steps(len(sets), opts), enabled=progress)
    start = time.perf_counter()
    try:
        measurement = measure(subject.flow, sets, opts, step=bar.step)
    finally:
        bar.close()
    if sampled is not None:
        measurement["samples"] = sampled
    report = {
        "format": FORMAT, "version": 1,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "command": command,
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "platform": platform.platform(), "threads": torch.get_num_threads()},
        "model": {"name": subject.name, "kind": subject.kind, "source": subject.source,
                  "input_shape": list(subject.input_shape or next(iter(sets.values())).shape[1:]),
                  "parameters": sum(p.numel() for p in subject.flow.parameters()), "unit_note": subject.unit_note},
        "measurement": measurement,
        "timing": {"load_s": load_s, "measure_s": time.perf_counter() - start},
    }
    return clean(report)


def render_report(report: dict[str, Any], *, figures: bool = True) -> tuple[str, str, dict[str, bytes]]:
    """``(markdown, html, pngs)`` of a report dict (e.g. read back from its ``report.json``)."""
    from .figures import figures as draw

    pngs = draw(report["measurement"]) if figures else {}
    parts = blocks(report, list(pngs))
    markdown = to_markdown(parts, {name: f"figures/{name}.png" for name in pngs})
    page = to_html(parts, pngs, f"Stability report: {report['model']['name']}")
    return markdown, page, pngs


def write_report(report: dict[str, Any], out: str | Path, *, figures: bool = True) -> dict[str, Path]:
    """Write ``report.json``, ``report.md``, ``report.html`` (and ``figures/*.png``) into ``out``."""
    out = Path(out)
    markdown, page, pngs = render_report(report, figures=figures)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "markdown": out / "report.md", "html": out / "report.html"}
    paths["json"].write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
    paths["markdown"].write_text(markdown)
    paths["html"].write_text(page)
    if pngs:
        (out / "figures").mkdir(exist_ok=True)
        for name, png in pngs.items():
            (out / "figures" / f"{name}.png").write_bytes(png)
    return paths
