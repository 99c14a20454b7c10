"""Measuring trained flows on every set: reconstruction errors, non-finite counts and bits per dimension, per
image, and the study's run (see :mod:`experiments.ood`)."""

from __future__ import annotations

import argparse
import logging
import math
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from invertible import allow_nonfinite, iterative_inverse
from invertible.diagnostics import reconstruction_error

from ..common.image_flows import ImageFlow, slug, study_flows, without_logdet
from ..common.plots import histogram, image_grid
from ..common.runs import CsvLog, Run
from ..common.verdicts import condition_at_points, kappa_at, kappa_method, point_verdict
from .sets import RawSet, available_sets, synthetic_unit
from .tables import fmt, markdown_tables

__all__ = ["FIELDS", "evaluate_set", "prepare", "run", "run_study", "set_verdict", "summarize", "to_model_space"]

_log = logging.getLogger("experiments.ood")

#: Columns of ``results.csv``.
#: ``invertible`` is the library's verdict on the set (1: every reconstruction finite and within
#: ``NONINVERTIBLE_RTOL`` of ``||x||``), ``recon_rel_max`` the worst relative error it judged and ``kappa_at_worst`` the
#: condition number (exact, float64 copy) at the worst-reconstructed image, a precursor only.
FIELDS = ["model", "set", "role", "n", "recon_mean", "recon_finite_mean", "recon_median", "recon_min", "recon_max",
          "relative_max", "recon_rel_max", "nan_samples", "inf_samples", "nonfinite_samples", "nonfinite_share",
          "latent_nonfinite_samples", "invertible", "kappa_at_worst", "bpd_n", "bpd_mean", "bpd_min", "bpd_max",
          "bpd_nonfinite_share", "seconds"]


def to_model_space(flow: ImageFlow, raw: RawSet, n: int, seed: int) -> Tensor:
    """The set's images in ``flow``'s input space (synthetic sets are drawn with ``seed``, the same for every
    model of the same shape)."""
    if raw.synthetic is not None:
        g = torch.Generator().manual_seed(seed)
        return flow.from_unit(synthetic_unit(raw.synthetic, n, flow.shape, g), raw.synthetic)
    assert raw.images is not None
    return flow.from_levels(raw.images[:n], raw.levels)


def _finite_stats(values: np.ndarray) -> tuple[float, float, float, float]:
    finite = values[np.isfinite(values)]
    if not finite.size:
        return math.nan, math.nan, math.nan, math.nan
    return float(finite.mean()), float(np.median(finite)), float(finite.min()), float(finite.max())


def evaluate_set(flow: ImageFlow, x: Tensor, *, batch_size: int, bpd: bool, bpd_n: int | None = None
                 ) -> dict[str, Any]:
    """Reconstruction errors, non-finite counts and bits/dim of ``flow`` on ``x`` (model space), per image
    (bits/dim of the first ``bpd_n`` images only, if given: the ``bpd`` array is then that long)."""
    l2, relative, nan, inf, latent, bits = [], [], [], [], [], []
    device = next(flow.model.parameters()).device
    for chunk in x.split(batch_size):
        chunk = chunk.to(device)
        with iterative_inverse(on_failure="return"), without_logdet(flow.model):
            stats = reconstruction_error(flow.model, chunk)
        l2.append(stats.l2.double().cpu())
        relative.append(stats.relative.double().cpu())
        nan.append(stats.nan.cpu())
        inf.append(stats.inf.cpu())
        latent.append(stats.forward_nonfinite.cpu())
    if bpd:
        for chunk in x[:bpd_n].split(batch_size):
            with torch.no_grad(), allow_nonfinite():
                bits.append(flow.bits_per_dim(chunk.to(device)).double().cpu())
    errors = torch.cat(l2).numpy()
    return {"l2": errors, "relative": torch.cat(relative).numpy(), "nan": torch.cat(nan).numpy(),
            "inf": torch.cat(inf).numpy(), "latent": torch.cat(latent).numpy(),
            "bpd": torch.cat(bits).numpy() if bpd else np.full(len(errors), np.nan)}


def summarize(values: dict[str, Any]) -> dict[str, Any]:
    """One row of ``results.csv`` from :func:`evaluate_set`'s per-image values."""
    errors, bpd = values["l2"], values["bpd"]
    nonfinite = (values["nan"] > 0) | (values["inf"] > 0) | ~np.isfinite(errors)
    f_mean, f_median, f_min, f_max = _finite_stats(errors)
    b_mean, _, b_min, b_max = _finite_stats(bpd)
    n = len(errors)
    relative = np.nan_to_num(values["relative"], nan=np.inf, posinf=np.inf)  # a non-finite one is infinitely off
    measured = 0 if np.isnan(bpd).all() else len(bpd)
    return {"n": n, "recon_mean": math.inf if nonfinite.any() else f_mean, "recon_finite_mean": f_mean,
            "recon_median": float(np.median(np.nan_to_num(errors, nan=np.inf))) if n else math.nan,
            "recon_min": f_min, "recon_max": math.inf if nonfinite.any() else f_max,
            "relative_max": float(relative.max()) if n else math.nan,
            "nan_samples": int((values["nan"] > 0).sum()), "inf_samples": int((values["inf"] > 0).sum()),
            "nonfinite_samples": int(nonfinite.sum()), "nonfinite_share": float(nonfinite.mean()) if n else math.nan,
            "latent_nonfinite_samples": int((values["latent"] > 0).sum()), "bpd_n": measured, "bpd_mean": b_mean,
            "bpd_min": b_min, "bpd_max": b_max,
            "bpd_nonfinite_share": float((~np.isfinite(bpd)).mean()) if measured else math.nan}


def _plots(flow: ImageFlow, per_set: dict[str, dict[str, Any]], inputs: dict[str, Tensor], folder: Path) -> None:
    name = slug(flow.name)
    histogram({s: v["l2"] for s, v in per_set.items()}, folder / f"recon_{name}.png", logx=True, bins=40,
              title=f"{flow.name}: reconstruction error per image", xlabel="||x - f^-1(f(x))||_2")
    if any(np.isfinite(v["bpd"]).any() for v in per_set.values()):
        histogram({s: v["bpd"] for s, v in per_set.items()}, folder / f"bpd_{name}.png", bins=40,
                  title=f"{flow.name}: bits per dimension", xlabel="bits/dim")
    # the 8 worst reconstructed inputs over all sets (non-finite first), with their reconstructions
    candidates = [(np.nan_to_num(v["l2"], nan=np.inf)[i], s, i) for s, v in per_set.items()
                  for i in range(len(v["l2"]))]
    worst = sorted(candidates, key=lambda c: -c[0])[:8]
    x = torch.stack([inputs[s][i] for _, s, i in worst])
    with torch.no_grad(), allow_nonfinite(), iterative_inverse(on_failure="return"), without_logdet(flow.model):
        x_hat = flow.model.inverse(flow.model(x)[0])[0]
    names = ", ".join(dict.fromkeys(s for _, s, _ in worst))
    image_grid(flow.to_unit(x.double()), flow.to_unit(x_hat.double()), folder / f"worst_{name}.png", ncol=8,
               value_range=(0.0, 1.0), title=f"{flow.name}: the 8 worst reconstructions ({names})")


def set_verdict(flow: ImageFlow, x: Tensor, values: dict[str, Any]) -> dict[str, Any]:
    """The library's verdict on one set from :func:`evaluate_set`'s per-image errors (relative to ``||x||`` in the
    model's input space), with the condition number at the worst-reconstructed image."""
    norms = x.detach().double().flatten(1).norm(dim=1).cpu().numpy()
    nonfinite = (values["nan"] > 0) | (values["inf"] > 0) | ~np.isfinite(values["l2"])
    rel = values["l2"] / np.maximum(norms, np.finfo(float).tiny)
    verdict = point_verdict(rel, nonfinite, dtype=flow.dtype)
    w = verdict["worst_index"]
    with iterative_inverse(on_failure="return"), without_logdet(flow.model):
        cond = np.full(len(rel), np.nan)
        cond[w] = kappa_at(flow.model, x[w:w + 1].to(next(flow.model.parameters()).device))[0]
    verdict["at_worst"] = condition_at_points([w], np.where(nonfinite, np.inf, rel), cond,
                                              method=kappa_method(x)).__dict__
    return verdict


def run_study(flows: Sequence[ImageFlow], sets: Sequence[RawSet], out: Path, *, n: int, batch_size: int, bpd: bool,
              seed: int, bpd_n: int | None = None) -> list[dict[str, Any]]:
    """Evaluate every flow on every set; write results.csv/.md, per-sample values and plots into ``out``."""
    rows: list[dict[str, Any]] = []
    log = CsvLog(out / "results.csv", FIELDS)
    try:
        for flow in flows:
            per_set: dict[str, dict[str, Any]] = {}
            inputs: dict[str, Tensor] = {}
            for k, raw in enumerate(sets):
                started = time.perf_counter()
                x = to_model_space(flow, raw, n, seed * 1000 + k)
                values = evaluate_set(flow, x, batch_size=batch_size, bpd=bpd, bpd_n=bpd_n)
                verdict = set_verdict(flow, x, values)
                row = {"model": flow.name, "set": raw.name, "role": raw.role, **summarize(values),
                       "recon_rel_max": verdict["worst_relative"], "invertible": int(verdict["invertible"]),
                       "kappa_at_worst": verdict["at_worst"]["kappa_forward"][0],
                       "seconds": time.perf_counter() - started}
                log.log(**row)
                rows.append({**row, "verdict": verdict})
                per_set[raw.name], inputs[raw.name] = values, x
                _log.info("%s on %s: max error %s, %d of %d not finite, bpd %s (%.0f s)", flow.name, raw.name,
                          fmt(row["recon_max"]), row["nonfinite_samples"], row["n"], fmt(row["bpd_mean"], 4),
                          row["seconds"])
            (out / "per_sample").mkdir(exist_ok=True)
            np.savez_compressed(out / "per_sample" / f"{slug(flow.name)}.npz",
                                **{f"{s}/{k}": v[k] for s, v in per_set.items()
                                   for k in ("l2", "relative", "bpd", "nan", "inf")})
            _plots(flow, per_set, inputs, out / "plots")
    finally:
        log.close()
    return rows


def prepare(args: argparse.Namespace, device: torch.device) -> tuple[list[ImageFlow], list[RawSet], list[str]]:
    """The flows (``--model``, or the embedded zoo, trained on first use) and the sets, loaded before the run folder
    exists: a missing model, data set or named set leaves nothing behind."""
    flows = study_flows(args, device)
    for flow in flows:
        flow.model.to(device)
    shape = max({f.data_shape for f in flows}, key=lambda s: s[1])
    sets, notes = available_sets(args.dataset, args.sets, n=args.n, shape=shape, data_dir=args.data_dir,
                                 ood_dir=args.ood_dir, seed=args.seed)
    return flows, sets, notes


def run(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate every flow on every set; ``results.csv``, ``results.md``, per-image values and plots."""
    flows, sets, notes = run.inputs
    rows = run_study(flows, sets, run.path, n=args.n, batch_size=args.batch_size, bpd=not args.no_bpd,
                     seed=args.seed, bpd_n=args.bpd_n)
    models = [f.name for f in flows]
    (run.path / "results.md").write_text(markdown_tables(rows, models))
    print(f"OOD reconstruction: {run.path}\n" + markdown_tables(rows, models).split("\n\n**")[0])
    return {"models": {f.name: {"source": f.source, "family": f.family, "levels": f.levels, "shape": list(f.shape)}
                       for f in flows},
            "sets": {s.name: {"role": s.role, "description": s.description} for s in sets},
            "unavailable": notes, "results": rows}
