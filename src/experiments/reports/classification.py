"""Regenerate docs/results/classification.md: the README's classification runs on the embedded digits.

Runs ``python -m experiments.classification`` once per configuration and setting (one process at a time, one
thread each), then writes the tables, the comparison figures and the reconstruction pictures. Finished runs
(with a metrics.json) are reused, so an interrupted report continues where it stopped; ``--report-only`` only
rewrites the document from the runs there are.

Usage::

    python -m experiments.reports.classification                  # all 23 runs: ~40 min of CPU, one run at a time
    python -m experiments.reports.classification --settings digits                           # 14 runs, ~20 min
    python -m experiments.reports.classification --settings digits --only affine_conv_nf_scaled additive_shuffle
    python -m experiments.reports.classification --report-only
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from invertible.regularizers import nf_term

from ..classification.figures import reconstruction_grid
from ..classification.readme_runs import ALL_RUNS
from ..classification.reload import load_run
from ..common.plots import line_panels
from ..common.runs import read_csv

__all__ = ["SETTINGS", "Setting", "main", "nf_pull", "regularizer", "run_all", "write_report"]


#: The README's NF weight 1e-5 was set for CIFAR-10's D = 3072 dimensions; the NF objective sums over dimensions,
#: so the same weight per dimension on 8x8 digits (D = 64) is 1e-5 * 3072 / 64 = 4.8e-4.
NF_SCALED = 1e-5 * 3072 / 64


#: The README's FD weight 1e-4 was set for the original finite-difference form on CIFAR-10, which is about
#: eps * D = 307 times the intended form (unit directions, divided by eps^2, batch mean); the intended form with
#: the paper's strength is therefore 1e-4 * 0.1 * 3072 = 3.1e-2.
FD_SCALED = 1e-4 * 0.1 * 3072


def _fd_scaled(permutation: str) -> list[str]:
    flags = list(ALL_RUNS[f"affine_{permutation}_fd"])
    for flag in ("--fd-coeff", "--fd-inv-coeff"):
        flags[flags.index(flag) + 1] = f"{FD_SCALED:.2g}"
    return flags


#: Runs of the ``digits`` setting whose final reconstructions are pictured (first 8 and worst 8 images of the
#: fixed test batch).
PICTURES = ("affine_conv", "affine_conv_nf", "affine_conv_nf_scaled", "affine_conv_fd", "affine_conv_fd_scaled")


@dataclass(frozen=True)
class Setting:
    """One training setting shared by all configurations of a table."""

    name: str
    title: str
    flags: list[str]
    extra_runs: dict[str, list[str]] = field(default_factory=dict)
    only: tuple[str, ...] | None = None  # a subset of the README runs and baselines (None: all of them)
    pictures: tuple[str, ...] = ()  # runs whose final reconstructions are pictured


#: The settings of the report: the study's digits defaults (Adam 1e-3, batch 32, no decay), under which the
#: unregularized affine flows lose their inverse at this scale; the paper's learning rate and batch size with
#: its decay schedule scaled to 30 epochs; and the digits defaults for three times as many steps, for the shuffle
#: model (which keeps its inverse within 450 iterations).
SETTINGS: dict[str, Setting] = {
    "digits": Setting(
        "digits", "the study's digits defaults: Adam 1e-3, batch 32, 10 epochs, no decay (450 iterations)",
        ["--lr", "1e-3", "--batch-size", "32", "--epochs", "10", "--log-every", "45", "--svd-every", "90",
         "--lr-decay-epochs"],
        extra_runs={"affine_conv_float64": [*ALL_RUNS["affine_conv"], "--dtype", "float64"],
                    "affine_conv_nf_scaled": [*ALL_RUNS["affine_conv"], "--nf-coeff", f"{NF_SCALED:.2g}"],
                    "affine_shuffle_nf_scaled": [*ALL_RUNS["affine_shuffle"], "--nf-coeff", f"{NF_SCALED:.2g}"],
                    "affine_conv_fd_scaled": _fd_scaled("conv"), "affine_shuffle_fd_scaled": _fd_scaled("shuffle"),
                    "affine_conv_fd_original": [*ALL_RUNS["affine_conv_fd"], "--fd-variant", "original"]},
        pictures=PICTURES),
    "paper_lr": Setting(
        "paper_lr", "the paper's Adam 1e-4 and batch 128, decay x0.1 at 30/60/80% of 30 epochs (360 iterations)",
        ["--lr", "1e-4", "--batch-size", "128", "--epochs", "30", "--lr-decay-epochs", "9", "18", "24",
         "--log-every", "30", "--svd-every", "60"],
        only=("affine_conv", "affine_shuffle", "additive_conv", "additive_shuffle")),
    "digits_long": Setting(
        "digits_long", "the digits defaults for 30 epochs (1350 iterations): does the shuffle model fail later?",
        ["--lr", "1e-3", "--batch-size", "32", "--epochs", "30", "--log-every", "45", "--svd-every", "90",
         "--lr-decay-epochs"],
        extra_runs={"affine_shuffle_nf_scaled": [*ALL_RUNS["affine_shuffle"], "--nf-coeff", f"{NF_SCALED:.2g}"],
                    "affine_shuffle_fd_scaled": _fd_scaled("shuffle")},
        only=("affine_shuffle", "affine_shuffle_nf", "affine_shuffle_fd"),
        pictures=("affine_shuffle", "affine_shuffle_nf_scaled")),
}


COLUMNS = [("test acc", "test_acc", "{:.3f}"), ("recon train mean", "recons_train_mean", "{:.2g}"),
           ("recon train max", "recons_train_max", "{:.2g}"), ("recon test mean", "recons_test_mean", "{:.2g}"),
           ("recon test max", "recons_test_max", "{:.2g}"), ("non-finite test", "recons_test_nonfinite", "{:.1%}"),
           ("κ fwd", "cond_forward", "{:.2g}"), ("κ inv", "cond_inverse", "{:.2g}"),
           ("σ_min", "sigma_min", "{:.2g}"), ("mem-saving grad angle", "grad_angle", "{:.2g}"),
           ("non-invertible", "non_invertible", "{}"), ("CPU time", "cpu_seconds", "{:.0f} s"),
           ("wall time", "seconds", "{:.0f} s")]


def _runs(setting: Setting) -> dict[str, list[str]]:
    chosen = {k: v for k, v in ALL_RUNS.items() if setting.only is None or k in setting.only}
    return {**chosen, **setting.extra_runs}


def _selected(setting: Setting, only: Sequence[str] | None) -> dict[str, list[str]]:
    """The runs of ``setting`` to train: all of them, or those named in ``only`` in the order given there."""
    runs = _runs(setting)
    return runs if only is None else {n: runs[n] for n in only if n in runs}


def _command(python: str, flags: list[str], setting: Setting, out: Path, resume: bool) -> list[str]:
    cmd = [python, "-m", "experiments.classification", *flags, *setting.flags, "--out", str(out), "--threads", "1"]
    if resume:
        cmd.append("--resume")
    elif out.exists():
        cmd.append("--overwrite")
    return cmd


def _value(metrics: dict[str, Any], key: str, fmt: str) -> str:
    value = metrics.get(key)
    if value is None:
        return "–"
    if isinstance(value, str):  # JSON spells non-finite floats as strings
        return {"Infinity": "inf", "NaN": "nan", "-Infinity": "-inf"}.get(value, value)
    if isinstance(value, bool):
        return "**yes**" if value else "no"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return fmt.format(value)


def run_all(root: Path, settings: Sequence[Setting], python: str = sys.executable,
            only: Sequence[str] | None = None) -> dict[str, float]:
    """Train every configuration (or those named in ``only``) that has no metrics.json yet, one process at a
    time; returns wall seconds per run. An interrupted run is resumed; one that cannot be resumed (its stored
    config differs from today's defaults) is started again from scratch."""
    times = {}
    for setting in settings:
        for name, flags in _selected(setting, only).items():
            out = root / setting.name / name
            if (out / "metrics.json").is_file():
                continue
            resume = (out / "checkpoints" / "latest.pt").is_file()  # an interrupted report: continue the run
            start = time.time()
            while True:
                cmd = _command(python, flags, setting, out, resume)
                print(f"[{setting.name}] {name}: {' '.join(cmd[2:])}", flush=True)
                log_path = root / f"{setting.name}-{name}.log"
                with open(log_path, "w") as log:
                    code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
                if not (resume and code == 2 and "cannot resume" in log_path.read_text()):
                    break
                print("    cannot resume (the stored config differs): starting it again", flush=True)
                resume = False
            times[f"{setting.name}/{name}"] = time.time() - start
            print(f"    exit {code} after {times[f'{setting.name}/{name}']:.0f} s", flush=True)
    return times


def _curve(path: Path, x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
    rows = read_csv(path) if path.is_file() else []
    pairs = [(float(r[x]), float(r[y])) for r in rows if r.get(x, "") != "" and r.get(y, "") != ""]
    xs, ys = zip(*pairs) if pairs else ((), ())
    return np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)


def _metrics(root: Path, setting: Setting, name: str) -> dict[str, Any] | None:
    path = root / setting.name / name / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _family(name: str) -> str:
    """The channel mixing a run's name says (``conv`` or ``shuffle``): each family gets its own figure."""
    return "conv" if "_conv" in name else "shuffle"


def figures(root: Path, setting: Setting, docs: Path) -> list[Path]:
    """One comparison figure per channel mixing (conv, shuffle) of one setting, and the reconstruction pictures
    of its affine 1x1-conv runs."""
    folder = docs / "classification"
    folder.mkdir(parents=True, exist_ok=True)
    names = [n for n in _runs(setting) if _metrics(root, setting, n) is not None]
    written = []
    for family in ("conv", "shuffle"):
        recon, cond, acc = {}, {}, {}
        for n in (n for n in names if _family(n) == family):
            run = root / setting.name / n
            recon[n] = _curve(run / "every_N_log.csv", "global_iteration", "max_recons_error")
            cond[n] = _curve(run / "svd_log.csv", "global_iteration", "condition_num")
            epochs, values = _curve(run / "epoch_log.csv", "epoch", "test_acc")
            acc[n] = (epochs + 1, values)
        if not recon:
            continue
        out = folder / f"{setting.name}_{family}.png"
        line_panels({"max reconstruction error, fixed test batch": recon,
                     "κ of J_F (float64, worst of 8 test images)": cond, "test accuracy": acc}, out,
                    xlabel="iteration (accuracy: epochs)", logy=[True, True, False],
                    title=f"{setting.name}, {family} mixing: {setting.title}")
        written.append(out)
    for n in setting.pictures:
        run = root / setting.name / n
        if (run / "metrics.json").is_file():
            _, data, model = load_run(run)
            written.append(reconstruction_grid(model, data, data.fixed_batch()[0],
                                               folder / f"{setting.name}_{n}_reconstructions.png"))
    return written


def _shrink(path: Path) -> Path:
    """Store a figure with a 128-colour palette (line plots and digit grids lose nothing visible; about a
    third of the size)."""
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT,
                                              dither=Image.Dither.NONE)
    small.save(path, optimize=True)
    return path


def _flag(flags: list[str], name: str) -> str | None:
    return flags[flags.index(name) + 1] if name in flags else None


def regularizer(flags: list[str]) -> str:
    """What a run adds to plain training, in words (``"–"`` for nothing)."""
    parts = []
    if (nf := _flag(flags, "--nf-coeff")) is not None and float(nf) > 0:
        parts.append(f"NF {float(nf):.2g}")
    fd, fd_inv = _flag(flags, "--fd-coeff"), _flag(flags, "--fd-inv-coeff")
    if fd is not None or fd_inv is not None:
        variant = _flag(flags, "--fd-variant") or "intended"
        parts.append(f"FD {float(fd or 0):.2g}/{float(fd_inv or 0):.2g} ({variant}, every "
                     f"{_flag(flags, '--regularize-every') or 1})")
    if "--mem-saving" in flags:
        parts.append("mem-saving")
    if (dtype := _flag(flags, "--dtype")) is not None:
        parts.append(dtype)
    return ", ".join(parts) or "–"


def table(root: Path, setting: Setting) -> list[str]:
    """The markdown table of one setting."""
    head = ["run", "added to training", *(c[0] for c in COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for name, flags in _runs(setting).items():
        metrics = _metrics(root, setting, name)
        if metrics is None:
            lines.append(f"| {name} | {regularizer(flags)} | " + " | ".join("not run" for _ in COLUMNS) + " |")
            continue
        status = "" if metrics.get("status") == "completed" else f" ({metrics.get('status')})"
        lines.append(f"| {name}{status} | {regularizer(flags)} | "
                     + " | ".join(_value(metrics, k, f) for _, k, f in COLUMNS) + " |")
    return lines


def status_lines(root: Path, setting: Setting) -> list[str]:
    """Plain statements, measured: which runs lost their inverse, which did not finish, which were not run."""
    rows: dict[str, list[str]] = {"non-invertible": [], "invertible": [], "stopped": [], "missing": []}
    for name in _runs(setting):
        metrics = _metrics(root, setting, name)
        if metrics is None:
            rows["missing"].append(f"`{name}`")
            continue
        if metrics.get("status") != "completed":
            rows["stopped"].append(f"`{name}` ({metrics.get('status')})")
        worst = _value(metrics, "recons_test_max", "{:.2g}")
        kappa = _value(metrics, "cond_inverse", "{:.2g}")
        rows["non-invertible" if metrics.get("non_invertible") else "invertible"].append(
            f"`{name}` (test max {worst}, κ {kappa})")
    words = {"non-invertible": "Numerically non-invertible at the end", "invertible": "Invertible at the end",
             "stopped": "Did not complete", "missing": "Not run (no finished run folder)"}
    return [f"- {words[k]}: " + ", ".join(v) + "." for k, v in rows.items() if v]


#: The NF-regularized runs whose pull on the flow is measured (gradient norms at the first and last checkpoint).
NF_RUNS = ("affine_conv_nf", "affine_conv_nf_scaled", "affine_shuffle_nf", "affine_shuffle_nf_scaled")


def nf_pull(folder: Path, checkpoint: str, batch: int = 128) -> dict[str, float]:
    """How hard a run's NF term pulls on the flow beside the cross-entropy, at one checkpoint: the negative
    log-likelihood per image (nats), and ``||coeff * grad NLL|| / ||grad cross-entropy||`` over the flow's
    parameters on the first ``batch`` training images (training mode, as in a training step)."""
    args, data, model = load_run(folder, checkpoint)
    model.train()
    x = data.to_model(data.train.images[:batch])
    y = data.train.labels[:batch].to(x.device)
    params = [p for p in model.flow.parameters() if p.requires_grad]
    logits, z, logdet = model(x)
    nll = nf_term(z, logdet, 1.0, prior=args.use_prior, levels=round(2 ** args.n_bits_x))
    norms = []
    for loss in (model.loss(logits, y), nll):
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        norms.append(math.sqrt(sum(float(g.pow(2).sum()) for g in grads if g is not None)))
    return {"coeff": args.nf_coeff, "nll": float(nll.detach()), "ratio": args.nf_coeff * norms[1] / norms[0]}


def nf_table(root: Path, setting: Setting) -> list[str]:
    """The NF term's pull at the start and the end of each finished NF run of ``setting`` (empty if none)."""
    lines = []
    for name in NF_RUNS:
        if _metrics(root, setting, name) is None:
            continue
        start, end = (nf_pull(root / setting.name / name, c) for c in ("init", "latest"))
        lines.append(f"| {name} | {start['coeff']:.2g} | {start['nll']:.0f} | {end['nll']:.0f} | "
                     f"{start['ratio']:.2g} | {end['ratio']:.2g} |")
    if not lines:
        return []
    return ["The NF term's pull on the flow (first 128 training images; NLL in nats per image, with the "
            "discretisation constant; pull = `||coeff * grad NLL|| / ||grad cross-entropy||` over the flow's "
            "parameters):", "",
            "| run | NF weight | NLL at start | NLL at end | pull at start | pull at end |", "|---" * 6 + "|",
            *lines, ""]


def _run_times(root: Path, setting: Setting) -> str:
    seconds = [m["seconds"] for n in _runs(setting) if (m := _metrics(root, setting, n)) and "seconds" in m]
    if not seconds:
        return ""
    low, high = min(seconds) / 60, max(seconds) / 60
    return (f"{len(seconds)} finished run folders; wall time per run {low:.0f}–{high:.0f} min on a shared 2-core "
            "machine (one thread each; the CPU time column is the process's own).")


def write_report(root: Path, docs: Path, settings: Sequence[Setting], total_seconds: float | None) -> Path:
    """Write docs/results/classification.md from the runs under ``root``."""
    from .classification_text import FINDINGS, INTRO

    lines = ["# INN classifier: numerical invertibility on the embedded digits", "",
             "Generated by `python -m experiments.reports.classification` "
             f"({_dt.date.today().isoformat()}, {platform.machine()}, python {platform.python_version()}"
             + (f", {total_seconds / 60:.0f} min of training in this invocation" if total_seconds else "") + ").",
             "", *INTRO, ""]
    for setting in settings:
        lines += [f"## Setting `{setting.name}`: {setting.title}", "",
                  "Flags added to every run: `" + " ".join(setting.flags) + "`. " + _run_times(root, setting), "",
                  *table(root, setting), "", *status_lines(root, setting), "", *nf_table(root, setting)]
        for path in map(_shrink, figures(root, setting, docs)):
            lines.append(f"![{path.stem}](classification/{path.name})")
            lines.append("")
    lines += FINDINGS
    out = docs / "classification.md"
    out.write_text("\n".join(lines) + "\n")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.reports.classification", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS),
                        help="Settings to run and report (default: all).")
    parser.add_argument("--runs", type=Path, default=Path("runs/report/classification"),
                        help="Folder of the run folders (default: %(default)s).")
    parser.add_argument("--docs", type=Path, default=Path("docs/results"),
                        help="Folder the report goes to (default: %(default)s).")
    parser.add_argument("--only", nargs="+", metavar="RUN",
                        help="Train only these configurations of the chosen settings, in this order (e.g. "
                             "affine_conv_nf_scaled additive_shuffle); the report still lists every one.")
    parser.add_argument("--report-only", action="store_true", help="Only rewrite the report from existing runs.")
    args = parser.parse_args(argv)
    settings = [SETTINGS[s] for s in args.settings]
    if args.only:
        known = {n for s in settings for n in _runs(s)}
        unknown = [n for n in args.only if n not in known]
        if unknown:
            parser.error(f"--only: unknown run(s) {', '.join(unknown)}; choose from {', '.join(sorted(known))}")
    args.runs.mkdir(parents=True, exist_ok=True)
    start = time.time()
    times = {} if args.report_only else run_all(args.runs, settings, only=args.only)
    out = write_report(args.runs, args.docs, settings, time.time() - start if times else None)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
