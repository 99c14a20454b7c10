"""Seed-by-seed outcomes of plan13's classification runs, with their spread: ``python -m experiments.plan13_summary``.

Reads the finished run folders of one plan13 setting (``<root>/classification/<setting>/<run>/s<seed>``, and the
``twin/`` folder a ``--twin`` run writes inside) and writes what they measured, nothing else: per model and seed the
library's verdict over the whole train and test sets (:data:`invertible.diagnostics.NONINVERTIBLE_RTOL`), the worst
relative reconstruction error, non-finite reconstructions, kappa at the worst-reconstructed image, test accuracy and
the first non-invertible evaluation; per model the spread over seeds (how many showed the failure, median and range);
and kappa at the worst-reconstructed image at every evaluation, i.e. over iterations. Output: a JSON file (the data)
and a Markdown page built from it.

Example (two seeds of one model, made up here, to show the spread)::

    >>> spread([4.9e6, 1.2e9, None])
    {'n': 2, 'median': 602450000.0, 'min': 4900000.0, 'max': 1200000000.0}

Command::

    python -m experiments.plan13_summary --root /work/runs13 --setting readme60 \\
        --out docs/results/classification/readme60
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .plan13 import RUNS, SETTINGS

__all__ = ["main", "regularizer", "seed_outcome", "spread", "summarize", "write_markdown"]

TWIN = "twin"


def _number(text: str | float | None) -> float | None:
    """A logged number (``"inf"``, ``"Infinity"`` and floats too); ``None`` for an empty or unreadable one."""
    try:
        return float(text) if text not in (None, "") else None
    except (TypeError, ValueError):
        return None


def seed_outcome(folder: Path) -> dict[str, Any] | None:
    """What one finished run folder measured (``None`` when it has no final ``metrics.json``)."""
    path = folder / "metrics.json"
    if not path.is_file():
        return None
    m = json.loads(path.read_text())
    if m.get("status") is None or "verdicts" not in m:
        return None
    verdicts = m["verdicts"]
    history = []
    log = folder / "epoch_log.csv"
    if log.is_file():
        with open(log, newline="") as handle:
            for row in csv.DictReader(handle):
                history.append({"iteration": int(float(row["global_iteration"])),
                                "invertible": row["invertible"] == "1",
                                "kappa_at_worst": _number(row["kappa_at_worst"]),
                                "worst_relative": max(_number(row["max_relative_train_recons_error"]) or 0.0,
                                                      _number(row["max_relative_test_recons_error"]) or 0.0),
                                # the epoch log holds shares of the sets, the verdicts counts
                                "nonfinite": (_number(row["nonfinite_train_recons"]) or 0.0) > 0
                                or (_number(row["nonfinite_test_recons"]) or 0.0) > 0})
    config = folder / "config.json"
    flags = json.loads(config.read_text()).get("args", {}) if config.is_file() else {}
    return {"status": m["status"], "steps": m.get("steps"), "invertible": bool(m["invertible"]),
            "regularizer": regularizer(flags),
            "rtol": m.get("noninvertible_rtol"), "test_acc": _number(m.get("test_acc")),
            "worst_relative": {s: float(v["worst_relative"]) for s, v in verdicts.items()},
            "nonfinite": {s: v["nonfinite"] for s, v in verdicts.items()},
            "above_rtol": {s: v["above_rtol"] for s, v in verdicts.items()},
            "kappa_at_worst": _number(m.get("kappa_at_worst")),
            "kappa_method": next((v["at_worst"].get("method") for v in verdicts.values() if v.get("at_worst")), None),
            "kappa_fixed_worst": _number(m.get("cond_forward")),
            "first_noninvertible_iteration": m.get("first_noninvertible_iteration"),
            "first_nonfinite_iteration": m.get("first_nonfinite_iteration"),
            "grad_angle": _number(m.get("grad_angle")), "seconds": _number(m.get("seconds")),
            "cpu_seconds": _number(m.get("cpu_seconds")),
            "history": history}


def regularizer(flags: dict[str, Any]) -> str:
    """What a run added to training, from its ``config.json`` flags (``-`` for nothing).

    >>> regularizer({"nf_coeff": 1e-5, "fd_coeff": 0.0, "mem_saving": False}), regularizer({"nf_coeff": -1.0})
    ('NF 1e-05', '-')
    """
    parts = [f"NF {flags['nf_coeff']:g}"] if flags.get("nf_coeff", -1.0) > 0 else []
    if flags.get("fd_coeff", 0.0) > 0 or flags.get("fd_inv_coeff", 0.0) > 0:
        parts.append(f"FD {flags.get('fd_coeff', 0.0):g}/{flags.get('fd_inv_coeff', 0.0):g}")
    if flags.get("mem_saving"):
        parts.append("memory-saving gradients")
    return ", ".join(parts) or "-"


def spread(values: Sequence[float | None]) -> dict[str, float | int | None]:
    """Count, median and range of the values that were measured (``None`` left out; ``inf`` kept)."""
    got = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not got:
        return {"n": 0, "median": None, "min": None, "max": None}
    return {"n": len(got), "median": statistics.median(got), "min": min(got), "max": max(got)}


def _journal(root: Path) -> tuple[dict[str, float], dict[str, str]]:
    """The launcher's wall seconds of each run that ended well, and the frozen code copy it ran from (last start)."""
    journal = root / "_launcher.jsonl"
    walls: dict[str, float] = {}
    code: dict[str, str] = {}
    if journal.is_file():
        for line in journal.read_text().splitlines():
            entry = json.loads(line)
            if entry.get("event") == "end" and entry.get("rc") == 0:
                walls[entry["run"]] = entry["wall_seconds"]
            elif entry.get("event") == "start" and entry.get("code"):
                code[entry["run"]] = Path(entry["code"]).name
    return walls, code


def summarize(root: Path, setting: str) -> dict[str, Any]:
    """Every finished seed of every run of ``classification/<setting>`` under ``root``, with spreads per model."""
    key = f"classification/{setting}"
    if key not in SETTINGS:
        known = sorted(k.split("/", 1)[1] for k in SETTINGS if k.startswith("classification/"))
        raise ValueError(f"unknown setting {setting!r}: plan13's classification settings are {known}")
    walls, code = _journal(root)
    models: dict[str, dict[str, Any]] = {}
    for run in (r for r in RUNS if r.page == "classification" and r.setting == setting):
        folder = run.folder(root)
        command = ("python " + " ".join(run.command("<root>"))).replace(f"--seed {run.seed} ", "--seed <seed> ") \
            .replace(f"/s{run.seed} ", "/s<seed> ")
        for name, sub in ((run.run, folder), (f"{run.run}/{TWIN}", folder / TWIN)):
            outcome = seed_outcome(sub)
            if outcome is None:
                continue
            outcome["wall_seconds_of_command"] = walls.get(run.key)
            outcome["code"] = code.get(run.key)
            model = models.setdefault(name, {"command": command, "regularizer": outcome["regularizer"], "seeds": {}})
            model["seeds"][str(run.seed)] = outcome
    for model in models.values():
        seeds = model["seeds"].values()
        model["n_seeds"] = len(model["seeds"])
        model["n_noninvertible"] = sum(not s["invertible"] for s in seeds)
        model["n_nonfinite"] = sum(sum(s["nonfinite"].values()) > 0 for s in seeds)
        model["spread"] = {
            "kappa_at_worst": spread([s["kappa_at_worst"] for s in seeds]),
            "worst_relative": spread([max(s["worst_relative"].values()) for s in seeds]),
            "test_acc": spread([s["test_acc"] for s in seeds]),
            "first_noninvertible_iteration": spread([i for i in (s["first_noninvertible_iteration"] for s in seeds)
                                                     if i is not None and i >= 0]),
        }
    return {"setting": key, "what": SETTINGS[key]["what"], "root": str(root), "models": models}


def _g(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "–"
    return "inf" if math.isinf(value) else f"{value:.{digits}g}"


def _range(s: dict[str, Any], digits: int = 2) -> str:
    if not s["n"]:
        return "–"
    return f"{_g(s['median'], digits)} ({_g(s['min'], digits)}–{_g(s['max'], digits)})"


def write_markdown(summary: dict[str, Any], max_columns: int = 12) -> str:
    """The page: the setting, one row per model (spread over seeds), one row per seed, kappa over iterations (at
    most ``max_columns`` evaluations, evenly spaced, ending at the last)."""
    models = summary["models"]
    rtol = next((s["rtol"] for m in models.values() for s in m["seeds"].values()), None)
    lines = [f"# {summary['setting']}: measured over seeds", "",
             "Generated by `python -m experiments.plan13_summary` from the run folders under "
             f"`{summary['root']}` (written by `python -m experiments.plan13`, one thread each, `nice`-d, on the "
             "shared 2-core machine: wall times are not benchmarks).", "", summary["what"] + ".", "",
             "Commands (the twin rows come from the same command as the regularized model: `--twin` trains the "
             "unregularized model of the same flags and seed in `twin/`):", ""]
    lines += sorted({f"- `{m['command']}`" for m in models.values()})
    lines += ["", f"Verdict: the library's (`invertible.diagnostics`): numerically non-invertible when any "
              f"reconstruction of the whole train or test set is non-finite or off by more than {rtol} of "
              "`||x||` (float32). kappa is the exact condition number of `J_F` at the worst-reconstructed image, "
              "a precursor, not the verdict. Spreads: median (min–max) over seeds."]
    few = [name for name, m in models.items() if m["n_seeds"] < 3]
    if few:
        lines += ["", f"Fewer than 3 seeds finished for {', '.join(f'`{n}`' for n in few)}: single measurements, "
                  "not a reproduction."]
    lines += ["",
              "| model | added to training | seeds | non-invertible | with non-finite | kappa at worst | "
              "worst relative error | test acc | first non-invertible iteration |", "|---" * 9 + "|"]
    for name, m in models.items():
        sp = m["spread"]
        lines.append(f"| {name} | {m['regularizer']} | {m['n_seeds']} | {m['n_noninvertible']} of {m['n_seeds']} | "
                     f"{m['n_nonfinite']} | "
                     f"{_range(sp['kappa_at_worst'])} | {_range(sp['worst_relative'])} | "
                     f"{_range(sp['test_acc'], 3)} | {_range(sp['first_noninvertible_iteration'], 4)} |")
    lines += ["", "Per seed:", "", "| model | seed | verdict | worst rel. train | worst rel. test | non-finite "
              "train/test | kappa at worst | kappa at 8 fixed test images | test acc | grad angle | training s | "
              "command wall s | code |", "|---" * 13 + "|"]
    for name, m in models.items():
        for seed, s in sorted(m["seeds"].items()):
            wr, nf = s["worst_relative"], s["nonfinite"]
            lines.append(f"| {name} | {seed} | {'invertible' if s['invertible'] else '**non-invertible**'} | "
                         f"{_g(wr.get('train'))} | {_g(wr.get('test'))} | {nf.get('train')}/{nf.get('test')} | "
                         f"{_g(s['kappa_at_worst'])} | {_g(s['kappa_fixed_worst'])} | {_g(s['test_acc'], 3)} | "
                         f"{_g(s['grad_angle'])} | {_g(s['seconds'], 3)} | {_g(s['wall_seconds_of_command'], 3)} | "
                         f"{s['code'] or '–'} |")
    iterations = sorted({h["iteration"] for m in models.values() for s in m["seeds"].values() for h in s["history"]})
    if len(iterations) > max_columns:  # evenly spaced evaluations, the last one always
        step = math.ceil(len(iterations) / max_columns)
        iterations = iterations[::-1][::step][::-1]
    if iterations:
        lines += ["", "kappa at the worst-reconstructed image of the train and test sets at every evaluation (bold: "
                  "the verdict at that evaluation is non-invertible; `(nf)`: a reconstruction is non-finite):", "",
                  "| model | seed | " + " | ".join(f"it {i}" for i in iterations) + " |",
                  "|---|---|" + "---|" * len(iterations)]
        for name, m in models.items():
            for seed, s in sorted(m["seeds"].items()):
                at = {h["iteration"]: h for h in s["history"]}
                cells = []
                for i in iterations:
                    h = at.get(i)
                    text = "–" if h is None else _g(h["kappa_at_worst"]) + (" (nf)" if h["nonfinite"] else "")
                    cells.append(text if h is None or h["invertible"] else f"**{text}**")
                lines.append(f"| {name} | {seed} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.plan13_summary", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("/work/runs13"), help="plan13's root (default: %(default)s).")
    parser.add_argument("--setting", default="readme60", help="classification setting of plan13 (default: "
                        "%(default)s).")
    parser.add_argument("--out", type=Path, required=True, help="Output stem: writes <out>.json and <out>.md.")
    args = parser.parse_args(argv)
    try:
        summary = summarize(args.root, args.setting)
    except ValueError as error:
        parser.error(str(error))
    if not summary["models"]:
        parser.error(f"no finished run folder of classification/{args.setting} under {args.root}: run "
                     f"`python -m experiments.plan13 --root {args.root} --only classification/{args.setting}` first")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=1, allow_nan=True) + "\n")
    args.out.with_suffix(".md").write_text(write_markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
