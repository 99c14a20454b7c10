"""Out-of-distribution reconstruction of trained flows (PAPER.md sections 2.7 and 2.8): ``python -m experiments.ood``.

The paper feeds a pre-trained affine Glow and a pre-trained Residual Flow images far from their training data
(noise, textures, other data sets) and measures, per image, the reconstruction error ``||x - f^-1(f(x))||_2`` in the
model's input space: the Glow fails to reconstruct some inputs (Inf/NaN), the Residual Flow reconstructs all. This
study measures the same, plus bits per dimension, for any set of models:

- by default the embedded zoo (:func:`experiments.image_flows.embedded_zoo`): an affine, an additive and a bounded
  affine Glow and a Residual Flow trained (or reused, from ``--zoo-dir``) on the embedded digits;
- ``--model PATH`` (repeatable, ``LABEL=PATH`` to name it): a run folder of ``python -m experiments.glow`` or of the
  zoo's Residual Flow, y0ast's pre-trained Glow folder (or ``glow.zip``), or rtqichen's pre-trained Residual Flow
  ``cifar10_resflow_16-16-16.pth`` (see :mod:`invertible.loaders`).

Sets (:mod:`experiments.ood_data`): the in-distribution train and test splits, synthetic Gaussian, uniform,
Rademacher and constant images, and every real OOD set that can be read here (MNIST-family sets for the digits;
SVHN, DTD/Places ``.t7`` and TinyImageNet from ``--ood-dir`` for CIFAR-10 models; crops of two photos always).

Per model and set (``results.csv``, ``results.md``, ``metrics.json``): the reconstruction error per image (mean over
all images, which is Inf once one is; mean, median and maximum over the finite ones; minimum), the number of images
whose reconstruction holds NaN or Inf and their share, the images whose latent ``f(x)`` is already non-finite, and
bits per dimension (mean, minimum, maximum over the finite values; share of non-finite ones). Per-image values go
to ``per_sample/<model>.npz``; histograms to ``plots/recon_<model>.png`` and ``plots/bpd_<model>.png``; the worst
reconstructed inputs to ``plots/worst_<model>.png``.

Examples::

    python -m experiments.ood              # embedded zoo on digits (training included: ~40 min on 2 shared cores)
    python -m experiments.ood --preset quick --n 64 --out runs/ood/quick      # seconds-long models
    python -m experiments.ood --model glow=ood-pretrained/pretrained --model resflow=cifar10_resflow_16-16-16.pth \\
        --dataset cifar10 --data-dir data --ood-dir ood-pretrained/ood_data --n 10000
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from invertible import allow_nonfinite, iterative_inverse
from invertible.diagnostics import reconstruction_error

from .data import DatasetNotFound, dataset_names
from .image_flows import ImageFlow, prepare_study, study_flows, without_logdet
from .ood_data import RawSet, available_sets, synthetic_unit
from .plots import histogram, image_grid
from .runs import CsvLog, RunExists, open_run
from .training import Stopwatch, resolve_device

__all__ = ["FIELDS", "build_parser", "evaluate_set", "main", "markdown_tables", "prepare"]

_log = logging.getLogger("experiments.ood")

#: Columns of ``results.csv``.
FIELDS = ["model", "set", "role", "n", "recon_mean", "recon_finite_mean", "recon_median", "recon_min", "recon_max",
          "nan_samples", "inf_samples", "nonfinite_samples", "nonfinite_share", "latent_nonfinite_samples",
          "bpd_n", "bpd_mean", "bpd_min", "bpd_max", "bpd_nonfinite_share", "seconds"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.ood", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=None, metavar="[LABEL=]PATH",
                        help="A model to evaluate (repeatable); default: the embedded zoo.")
    parser.add_argument("--dataset", default="digits", choices=dataset_names(),
                        help="In-distribution data set: the zoo's training data, and the train/test sets evaluated "
                             "(default: %(default)s).")
    parser.add_argument("--data-dir", type=Path, default=Path("data"),
                        help="Folder searched for data set files (default: %(default)s).")
    parser.add_argument("--ood-dir", type=Path, default=Path("ood_data"),
                        help="Folder with the paper's dtd.t7, places.t7 and Imagenet_resize/ (default: %(default)s).")
    parser.add_argument("--sets", nargs="+", default=None,
                        help="Sets to evaluate (default: in-distribution train and test, gaussian, uniform, "
                             "rademacher, constant, and every real OOD set available for --dataset).")
    parser.add_argument("--n", type=int, default=1000,
                        help="Images per set at most (the first ones; synthetic sets draw this many) (default: "
                             "%(default)s; the paper: 10000 and full data splits).")
    parser.add_argument("--batch-size", type=int, default=250, help="Images per forward/inverse call.")
    parser.add_argument("--no-bpd", action="store_true",
                        help="Skip bits per dimension (a pre-trained Residual Flow's log-det estimate is slow).")
    parser.add_argument("--bpd-n", type=int, default=None,
                        help="Bits per dimension on the first this many images of each set only (default: all; a "
                             "Residual Flow's log-det costs far more than its reconstruction).")
    parser.add_argument("--preset", choices=["default", "quick"], default="default",
                        help="Size of the zoo's models: default (5-14 min per Glow, ~20 min for the "
                             "Residual Flow on digits, on 2 shared cores) or quick (seconds, for tests) "
                             "(default: %(default)s).")
    parser.add_argument("--zoo-dir", type=Path, default=None,
                        help="Where the zoo's runs live and are reused (default: runs/zoo/<dataset>-<preset>).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the synthetic sets and the zoo's training.")
    parser.add_argument("--out", type=Path, default=None,
                        help="Output folder (default: runs/ood/<dataset>-<preset>, or runs/ood/models for --model).")
    parser.add_argument("--overwrite", action="store_true", help="Replace an existing output folder.")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: %(default)s).")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice).")
    return parser


# ----------------------------------------------------------------------------------------------------------------
# Measuring
# ----------------------------------------------------------------------------------------------------------------
def prepare(flow: ImageFlow, raw: RawSet, n: int, seed: int) -> Tensor:
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
    l2, nan, inf, latent, bits = [], [], [], [], []
    device = next(flow.model.parameters()).device
    for chunk in x.split(batch_size):
        chunk = chunk.to(device)
        with iterative_inverse(on_failure="return"), without_logdet(flow.model):
            stats = reconstruction_error(flow.model, chunk)
        l2.append(stats.l2.double().cpu())
        nan.append(stats.nan.cpu())
        inf.append(stats.inf.cpu())
        latent.append(stats.forward_nonfinite.cpu())
    if bpd:
        for chunk in x[:bpd_n].split(batch_size):
            with torch.no_grad(), allow_nonfinite():
                bits.append(flow.bits_per_dim(chunk.to(device)).double().cpu())
    errors = torch.cat(l2).numpy()
    return {"l2": errors, "nan": torch.cat(nan).numpy(), "inf": torch.cat(inf).numpy(),
            "latent": torch.cat(latent).numpy(),
            "bpd": torch.cat(bits).numpy() if bpd else np.full(len(errors), np.nan)}


def summarize(values: dict[str, Any]) -> dict[str, Any]:
    """One row of ``results.csv`` from :func:`evaluate_set`'s per-image values."""
    errors, bpd = values["l2"], values["bpd"]
    nonfinite = (values["nan"] > 0) | (values["inf"] > 0) | ~np.isfinite(errors)
    f_mean, f_median, f_min, f_max = _finite_stats(errors)
    b_mean, _, b_min, b_max = _finite_stats(bpd)
    n = len(errors)
    measured = 0 if np.isnan(bpd).all() else len(bpd)
    return {"n": n, "recon_mean": math.inf if nonfinite.any() else f_mean, "recon_finite_mean": f_mean,
            "recon_median": float(np.median(np.nan_to_num(errors, nan=np.inf))) if n else math.nan,
            "recon_min": f_min, "recon_max": math.inf if nonfinite.any() else f_max,
            "nan_samples": int((values["nan"] > 0).sum()), "inf_samples": int((values["inf"] > 0).sum()),
            "nonfinite_samples": int(nonfinite.sum()), "nonfinite_share": float(nonfinite.mean()) if n else math.nan,
            "latent_nonfinite_samples": int((values["latent"] > 0).sum()), "bpd_n": measured, "bpd_mean": b_mean,
            "bpd_min": b_min, "bpd_max": b_max,
            "bpd_nonfinite_share": float((~np.isfinite(bpd)).mean()) if measured else math.nan}


# ----------------------------------------------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------------------------------------------
def _fmt(value: Any, digits: int = 3) -> str:
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
            cells.append(f"{_fmt(r['recon_max'])} ({_fmt(100 * share, 2)}% non-finite)" if share
                         else f"{_fmt(r['recon_max'])}")
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
            out.append(f"| {s} | {r['n']} | {_fmt(r['recon_mean'])} | {_fmt(r['recon_finite_mean'])} | "
                       f"{_fmt(r['recon_median'])} | {_fmt(r['recon_min'])} | {_fmt(r['recon_max'])} | "
                       f"{r['nan_samples']} | {r['inf_samples']} | {_fmt(100 * r['nonfinite_share'], 3)}% | "
                       f"{r['bpd_n']} | "
                       f"{_fmt(r['bpd_mean'], 4)} | {_fmt(r['bpd_min'], 4)} | {_fmt(r['bpd_max'], 4)} | "
                       f"{_fmt(100 * r['bpd_nonfinite_share'], 3)}% |")
    return "\n".join(out) + "\n"


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _plots(flow: ImageFlow, per_set: dict[str, dict[str, Any]], inputs: dict[str, Tensor], folder: Path) -> None:
    slug = _slug(flow.name)
    histogram({s: v["l2"] for s, v in per_set.items()}, folder / f"recon_{slug}.png", logx=True, bins=40,
              title=f"{flow.name}: reconstruction error per image", xlabel="||x - f^-1(f(x))||_2")
    if any(np.isfinite(v["bpd"]).any() for v in per_set.values()):
        histogram({s: v["bpd"] for s, v in per_set.items()}, folder / f"bpd_{slug}.png", bins=40,
                  title=f"{flow.name}: bits per dimension", xlabel="bits/dim")
    # the 8 worst reconstructed inputs over all sets (non-finite first), with their reconstructions
    candidates = [(np.nan_to_num(v["l2"], nan=np.inf)[i], s, i) for s, v in per_set.items()
                  for i in range(len(v["l2"]))]
    worst = sorted(candidates, key=lambda c: -c[0])[:8]
    x = torch.stack([inputs[s][i] for _, s, i in worst])
    with torch.no_grad(), allow_nonfinite(), iterative_inverse(on_failure="return"), without_logdet(flow.model):
        x_hat = flow.model.inverse(flow.model(x)[0])[0]
    names = ", ".join(dict.fromkeys(s for _, s, _ in worst))
    image_grid(flow.to_unit(x.double()), flow.to_unit(x_hat.double()), folder / f"worst_{slug}.png", ncol=8,
               value_range=(0.0, 1.0), title=f"{flow.name}: the 8 worst reconstructions ({names})")


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
                x = prepare(flow, raw, n, seed * 1000 + k)
                values = evaluate_set(flow, x, batch_size=batch_size, bpd=bpd, bpd_n=bpd_n)
                row = {"model": flow.name, "set": raw.name, "role": raw.role, **summarize(values),
                       "seconds": time.perf_counter() - started}
                log.log(**row)
                rows.append(row)
                per_set[raw.name], inputs[raw.name] = values, x
                _log.info("%s on %s: max error %s, %d of %d not finite, bpd %s (%.0f s)", flow.name, raw.name,
                          _fmt(row["recon_max"]), row["nonfinite_samples"], row["n"], _fmt(row["bpd_mean"], 4),
                          row["seconds"])
            (out / "per_sample").mkdir(exist_ok=True)
            np.savez_compressed(out / "per_sample" / f"{_slug(flow.name)}.npz",
                                **{f"{s}/{k}": v[k] for s, v in per_set.items() for k in ("l2", "bpd", "nan", "inf")})
            _plots(flow, per_set, inputs, out / "plots")
    finally:
        log.close()
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m experiments.ood``: returns the exit status (0 ok, 2 bad input)."""
    args = build_parser().parse_args(argv)
    prepare_study(args, "ood")
    watch = Stopwatch()
    try:
        device = resolve_device(args.device)
        run = open_run(args.out, args, overwrite=args.overwrite)
        flows = study_flows(args, device)
        if not args.model:
            for flow in flows:
                flow.model.to(device)
        shapes = {f.data_shape for f in flows}
        shape = max(shapes, key=lambda s: s[1])
        sets, notes = available_sets(args.dataset, args.sets, n=args.n, shape=shape, data_dir=args.data_dir,
                                     ood_dir=args.ood_dir, seed=args.seed)
        rows = run_study(flows, sets, args.out, n=args.n, batch_size=args.batch_size, bpd=not args.no_bpd,
                         seed=args.seed, bpd_n=args.bpd_n)
        models = [f.name for f in flows]
        (args.out / "results.md").write_text(markdown_tables(rows, models))
        run.update_metrics(models={f.name: {"source": f.source, "family": f.family, "levels": f.levels,
                                            "shape": list(f.shape)} for f in flows},
                           sets={s.name: {"role": s.role, "description": s.description} for s in sets},
                           unavailable=notes, results=rows, **watch.seconds())
        run.close()
        print(f"OOD reconstruction: {args.out}\n" + markdown_tables(rows, models).split("\n\n**")[0])
        return 0
    except (RunExists, FileNotFoundError, DatasetNotFound, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
