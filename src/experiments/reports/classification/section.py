"""One setting's section of the classification page: its table, the NF term's pull, figures and pictures."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...common.plots import line_panels
from ..common import Page, RunRecord, Runs, fmt, minutes, num, percent, table
from .claims import group_name, seeds_of, verdict
from .pull import nf_pull

__all__ = ["NF_RUNS", "regularizer", "write"]

#: The NF-regularized configurations whose pull on the flow is measured.
NF_RUNS = ("affine_conv_nf", "affine_conv_nf_scaled", "affine_shuffle_nf", "affine_shuffle_nf_scaled")


def _flag(flags: Sequence[str], name: str) -> str | None:
    return flags[list(flags).index(name) + 1] if name in flags else None


def regularizer(flags: Sequence[str]) -> str:
    """What a configuration adds to plain training, in words (``-`` for nothing).

    >>> regularizer(["--coupling", "affine", "--nf-coeff", "1e-5"])
    'NF 1e-5'
    """
    parts = []
    if (nf := _flag(flags, "--nf-coeff")) is not None and float(nf) > 0:
        parts.append(f"NF {fmt(float(nf))}")
    fd, fd_inv = _flag(flags, "--fd-coeff"), _flag(flags, "--fd-inv-coeff")
    if fd is not None or fd_inv is not None:
        variant = _flag(flags, "--fd-variant") or "intended"
        parts.append(f"FD {fmt(float(fd or 0))}/{fmt(float(fd_inv or 0))} ({variant}, every "
                     f"{_flag(flags, '--regularize-every') or 1})")
    if "--mem-saving" in flags:
        parts.append("mem-saving")
    if (dtype := _flag(flags, "--dtype")) is not None:
        parts.append(dtype)
    return ", ".join(parts) or "-"


def _curve(run: RunRecord, name: str, x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
    pairs = [(float(r[x]), float(r[y])) for r in run.csv(name) if r.get(x, "") != "" and r.get(y, "") != ""]
    xs, ys = zip(*pairs, strict=True) if pairs else ((), ())
    return np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)


def _rows(runs: Runs, setting: str, configs: Sequence[str]) -> list[list[str]]:
    rows = []
    for config in configs:
        declared = runs.group(group_name(setting, config), finished=False)
        for run in declared:
            flags = run.spec.argv
            if not run.finished:
                continue
            m = run.metrics
            status = "" if run.completed else f" ({run.status})"
            rows.append([f"`{config}`{status}", str(run.seed), regularizer(flags), fmt(m.get("test_acc")),
                         fmt(m.get("recons_train_max")), fmt(m.get("recons_test_max")),
                         fmt(verdict(run).worst_relative),
                         percent(m.get("recons_test_nonfinite")), fmt(m.get("cond_forward")),
                         fmt(m.get("cond_inverse")), fmt(m.get("sigma_min")), fmt(m.get("grad_angle")),
                         verdict(run).label, minutes(m.get("timing", {}).get("cpu_seconds"))])
    return rows


def _pull_rows(runs: Runs, setting: str) -> list[list[str]]:
    rows = []
    for config in NF_RUNS:
        group = seeds_of(runs, setting, config)
        if not group or not group[0].completed:
            continue
        run = group[0]
        start, end = (nf_pull(run.path, c) for c in ("init", "latest"))
        rows.append([f"`{config}`", str(run.seed), fmt(start["coeff"]), fmt(start["nll"]), fmt(end["nll"]),
                     fmt(start["ratio"]), fmt(end["ratio"])])
    return rows


def _figures(runs: Runs, page: Page, setting: str, configs: Sequence[str], pictures: Sequence[str]) -> list[str]:
    links = []
    for family in ("conv", "shuffle"):
        recon, cond, acc = {}, {}, {}
        for config in (c for c in configs if ("_conv" in c) == (family == "conv")):
            group = seeds_of(runs, setting, config)
            if not group:
                continue
            run = group[0]
            recon[config] = _curve(run, "every_N_log.csv", "global_iteration", "max_recons_error")
            cond[config] = _curve(run, "svd_log.csv", "global_iteration", "condition_num")
            epochs, values = _curve(run, "epoch_log.csv", "epoch", "test_acc")
            acc[config] = (epochs + 1, values)
        if not recon:
            continue
        panels = {"max reconstruction error, fixed test batch": recon,
                  "kappa of J_F (float64, worst of the measured test images)": cond, "test accuracy": acc}
        links.append(page.figures.draw(
            lambda path, panels=panels, family=family: line_panels(
                panels, path, xlabel="iteration (accuracy: epochs)", logy=[True, True, False],
                title=f"{setting}, {family} mixing (first seed)"),
            f"{setting}_{family}.png"))
    for config in pictures:
        group = seeds_of(runs, setting, config)
        if group and (group[0].path / "plots" / "reconstructions.png").is_file():
            links.append(page.figures.copy(group[0].path / "plots" / "reconstructions.png",
                                           f"{setting}_{config}_reconstructions.png"))
    return links


def write(runs: Runs, page: Page, setting: str, flags: Sequence[str], configs: Sequence[str],
          pictures: Sequence[str]) -> None:
    declared = [r for c in configs for r in runs.group(group_name(setting, c), finished=False)]
    done = [r for r in declared if r.finished]
    pull = _pull_rows(runs, setting)
    missing: dict[str, list[str]] = {}
    for r in declared:
        if not r.finished:
            missing.setdefault(r.spec.group.split("/")[-1], []).append(str(r.spec.seed))
    page.fragment(
        f"setting_{setting}", flags=" ".join(flags), finished=len(done), declared=len(declared),
        cpu=sum(num(r.metrics.get("timing", {}).get("cpu_seconds")) for r in done),
        missing=[f"`{c}` (seed{'s' if len(s) > 1 else ''} {', '.join(s)})" for c, s in missing.items()],
        stopped=[f"`{r.spec.group.split('/')[-1]}` seed {r.seed} ({r.status})" for r in done if not r.completed],
        table=table(["run", "seed", "added to training", "test acc", "recon train max", "recon test max",
                     "worst relative error", "non-finite test", "kappa fwd", "kappa inv", "sigma_min",
                     "mem-saving grad angle", "verdict", "CPU time"], _rows(runs, setting, configs)),
        pull=table(["run", "seed", "NF weight", "NLL at start", "NLL at end", "pull at start", "pull at end"],
                   pull) if pull else "",
        figures=_figures(runs, page, setting, configs, pictures))
