"""The OOD study's Markdown tables, for its run folder's results.md (the results page builds its own)."""

from __future__ import annotations

import math
from typing import Any, Sequence

__all__ = ["fmt", "markdown_tables"]


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: ``-`` for missing/NaN, ``inf``, integers as they are, else ``digits`` significant digits."""
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}g}"


def markdown_tables(rows: Sequence[dict[str, Any]], models: Sequence[str]) -> str:
    """A comparison table (largest error and non-finite share per set and model) and one full table per model."""
    sets = list(dict.fromkeys(r["set"] for r in rows))
    by = {(r["model"], r["set"]): r for r in rows}
    lines = ["| set | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    for s in sets:
        cells = []
        for m in models:
            r = by.get((m, s))
            if r is None:
                cells.append("-")
                continue
            share = r["nonfinite_share"]
            cells.append(f"{fmt(r['recon_max'])} ({fmt(100 * share, 2)}% non-finite)" if share
                         else f"{fmt(r['recon_max'])}")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    out = ["Largest reconstruction error per set (L2 over the image, model input space), and the share of images "
           "whose reconstruction is not finite:", "", *lines]
    header = ("| set | n | error mean | finite mean | median | min | max | NaN | Inf | non-finite | bpd n | "
              "bpd mean | bpd min | bpd max | bpd non-finite |")
    for m in models:
        out += ["", f"**{m}**", "", header, "|---|" + "---:|" * 14]
        for s in sets:
            r = by.get((m, s))
            if r is None:
                continue
            out.append(f"| {s} | {r['n']} | {fmt(r['recon_mean'])} | {fmt(r['recon_finite_mean'])} | "
                       f"{fmt(r['recon_median'])} | {fmt(r['recon_min'])} | {fmt(r['recon_max'])} | "
                       f"{r['nan_samples']} | {r['inf_samples']} | {fmt(100 * r['nonfinite_share'], 3)}% | "
                       f"{r['bpd_n']} | "
                       f"{fmt(r['bpd_mean'], 4)} | {fmt(r['bpd_min'], 4)} | {fmt(r['bpd_max'], 4)} | "
                       f"{fmt(100 * r['bpd_nonfinite_share'], 3)}% |")
    return "\n".join(out) + "\n"
