"""Tables and figures shared by the Glow and FlowGAN reports: formatting, the last-snapshot table of an
``analysis.csv``, the over-training table, and shrunken copies of figures for docs/results."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

from ..common.runs import read_csv

__all__ = ["copy_figure", "fmt", "last_snapshot_rows", "num", "over_training_rows", "run_study", "table"]


def num(value: Any) -> float:
    """A CSV/JSON cell as a float (``''``, ``None`` and unparsable text as NaN; JSON's "Infinity" as inf)."""
    if value is None or value == "":
        return math.nan
    if isinstance(value, str):
        special = {"Infinity": math.inf, "-Infinity": -math.inf, "NaN": math.nan}
        if value in special:
            return special[value]
        try:
            return float(value)
        except ValueError:
            return math.nan
    return float(value)


def fmt(value: Any, digits: int = 2) -> str:
    """A number for a Markdown table: scientific when very small or large; inf and NaN spelled out."""
    x = num(value)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x != 0 and (abs(x) >= 1e4 or abs(x) < 1e-2):
        return f"{x:.{digits - 1}e}".replace("e+0", "e").replace("e-0", "e-").replace("e+", "e")
    return f"{x:.{digits + 1}g}".replace("e+0", "e").replace("e-0", "e-").replace("e+", "e")


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


#: The columns of the last-snapshot table: (column of analysis.csv, header, digits).
LAST_COLUMNS = [("input_nonfinite", "non-finite inputs", 2), ("bpd", "bpd", 3), ("cond_max", "max kappa", 2),
                ("logdet_error_max", "log-det error", 2), ("mse_1_max", "max MSE, 1 trip", 2),
                ("mse_9_max", "max MSE, 9 trips", 2), ("pad_9", "PAD, 9 trips", 2),
                ("recon_nonfinite_9", "non-finite recon", 2)]


def last_snapshot_rows(analysis: Path, models: Sequence[str] | None = None) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the table: each model's last snapshot, one row per probe set."""
    rows = read_csv(analysis)
    names = list(models or dict.fromkeys(r["model"] for r in rows))
    out = []
    for name in names:
        mine = [r for r in rows if r["model"] == name]
        if not mine:
            continue
        last = max(int(r["step"]) for r in mine)
        for r in mine:
            if int(r["step"]) == last:
                out.append([name, str(last), r["set"], *[fmt(r[c], d) for c, _, d in LAST_COLUMNS]])
    return ["model", "step", "probe set", *[h for _, h, _ in LAST_COLUMNS]], out


def over_training_rows(analysis: Path, column: str, sets: Sequence[str], models: Sequence[str] | None = None
                       ) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per model and snapshot, the ``column`` of each probe set in ``sets``."""
    rows = read_csv(analysis)
    names = list(models or dict.fromkeys(r["model"] for r in rows))
    out = []
    for name in names:
        steps = sorted({int(r["step"]) for r in rows if r["model"] == name})
        for step in steps:
            cells = {r["set"]: r[column] for r in rows if r["model"] == name and int(r["step"]) == step}
            out.append([name, str(step), *[fmt(cells.get(s)) for s in sets]])
    return ["model", "step", *sets], out


def copy_figure(source: Path, target: Path, width: int = 1000) -> str:
    """Copy a PNG into the docs, at most ``width`` pixels wide and palette-quantised; return its file name."""
    from PIL import Image  # a dependency of matplotlib

    target.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(source) as image:
        image = image.convert("RGB")
        if image.width > width:
            image = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
        image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)
    return target.name


def run_study(module: str, out: Path, argv: Sequence[str], finished_key: str) -> float:
    """Run ``python -m <module> <argv> --out <out>`` unless its metrics.json has ``finished_key``; resume an
    interrupted run. Returns the seconds it took (0 when reused)."""
    import time

    metrics = out / "metrics.json"
    if metrics.is_file() and finished_key in json.loads(metrics.read_text()):
        print(f"[report] reusing {out}", flush=True)
        return 0.0
    mode = ["--resume"] if (out / "config.json").is_file() else []
    command = [sys.executable, "-m", module, *argv, "--out", str(out), *mode]
    print(f"[report] {' '.join(command)}", flush=True)
    started = time.time()
    subprocess.run(command, check=True)
    return time.time() - started


def write_page(*, title: str, command: str, extra_args: str, runs: Path, out: Path, prefix: str,
               studies: Sequence[str], titles: dict[str, str], intro: Sequence[str], discussion: Sequence[str],
               section: Any) -> None:
    """Write a study report: header naming the command that made it, one section per finished study folder
    ``runs / f"{prefix}-{name}"`` (``section(name, title, folder, figures)``), then the discussion."""
    import datetime as _dt
    import platform

    import torch

    figures = out.parent / prefix
    parts = [f"# {title}", "",
             f"Generated by `{command}{extra_args}` on {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d')} "
             f"({platform.machine()}, torch {torch.__version__}). Every number is read from the run folders in "
             f"`{runs}`; rerun the command to regenerate this page.", "", *intro]
    for name in studies:
        folder = runs / f"{prefix}-{name}"
        heading = titles.get(name, name)
        if (folder / "analysis.csv").is_file() and (folder / "probes.json").is_file():
            parts.append(section(name, heading, folder, figures))
        else:
            parts.append(f"## {heading}\n\n*(no finished run in `{folder}`)*\n")
    parts += discussion
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(parts) + "\n")
    print(f"[report] wrote {out}", flush=True)
