"""The stability analysis of the original's ``analyze.py``, over every kept snapshot of one or more model runs.

Probe sets (the same images for every model and snapshot of a study, so curves compare directly):

- ``data``: the first test images; ``gaussian``: ``clip(0.5 + N(0, 1), 0, 1)`` per pixel; ``rademacher``: each
  pixel black or white; ``ood``: another data set (see :func:`~experiments.common.glow.data.ood_images`). All are
  quantised to the data's grey levels and dequantised with a fixed seeded noise, like training images.
- ``samples``: the model's own samples ``f^-1(z)`` at temperature 1 from one fixed ``z`` per study (split latents
  included, i.e. drawn from the learned conditional priors), measured where they are finite.

Measured per set (columns of ``analysis.csv``):

- ``input_nonfinite``: share of inputs with a NaN/Inf pixel (non-zero only for samples: the original's "NaN
  samples"); ``input_max_abs``: largest finite pixel magnitude (the data lie in ``[-0.5, 0.5)``);
- ``bpd``: bits per dimension (mean over the finite values; ``bpd_nonfinite``: share of non-finite ones);
- ``cond_median``/``cond_max``: condition number of the exact Jacobian of the whole flow (split latents included)
  at the first ``--jacobian-samples`` inputs, computed on a float64 copy of the learned map (a float32 Jacobian
  cannot resolve condition numbers beyond about 1e7); ``cond_train_dtype_max``: the same in the run's dtype;
- ``logdet_error_max``: ``|log-det of the flow - slogdet of its autograd Jacobian|`` in the run's dtype, the
  original's ``dlogdet``;
- ``mse_1``/``mse_9`` (and ``_max``): mean squared distance to the input after 1 and after 9 round trips
  ``x_k = f^-1(f(x_{k-1}))`` (the original's ``l2_0``/``l2_9``), means over the finite reconstructions, maxima
  Inf where one is not finite; ``pad_9``: mean absolute distance in grey levels after 9 round trips (the original's
  PAD); ``recon_nonfinite_1``/``_9``: share of inputs whose reconstruction is not finite; ``relative_max_1``: the
  largest ``||x - f^-1(f(x))|| / ||x||`` after one round trip (Inf where one is not finite), which the library's
  invertibility verdict reads;
- ``invertible``: the library's verdict on the set (:func:`invertible.diagnostics.invertibility_verdict`: 1 when every
  reconstruction after one round trip is finite and within ``NONINVERTIBLE_RTOL`` relative, in the run's dtype);
  ``recon_rel_max``: the worst relative error it judged; ``kappa_at_worst``: the condition number (float64, exact)
  at the worst-reconstructed input, a precursor only; the whole verdict (``verdict``) goes into the rows and into
  ``metrics.json`` with the last snapshot;
- ``latent_mse``/``latent_mse_max`` (samples only): the round trip the other way, ``z -> f^-1(z) -> f(f^-1(z))``,
  mean squared distance to ``z`` over the finite samples (a generator that contracts many latents onto nearly the
  same image reconstructs its images but not their latents); ``latent_nonfinite``: share not finite.
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from invertible import allow_nonfinite
from invertible.diagnostics import invertibility_verdict, jacobian_stats, repeated_round_trips
from invertible.models import Flow, bits_per_dim

from ..plots import image_grid, line_panels
from ..runs import CsvLog, read_csv, write_json
from .data import GlowData, load_data, noise_images, ood_images
from .model import RunModel, find_model_runs, load_run, snapshots

__all__ = ["ANALYSED_STUDY", "ANALYSIS_FIELDS", "AnalysisError", "PROBE_SETS", "Probes", "analyze_folders",
           "analyze_model",
           "analyze_runs", "analyze_study", "finite_rows", "first_failures", "last_snapshot_table", "latent_round_trip",
           "make_probes",
           "measure_set", "model_bpd", "plot_analysis", "sample", "summary"]

_log = logging.getLogger(__name__)

#: The probe sets, in table order.
PROBE_SETS = ("data", "samples", "gaussian", "rademacher", "ood")
#: Columns of ``analysis.csv``.
ANALYSIS_FIELDS = ["model", "step", "set", "n", "input_nonfinite", "input_max_abs", "bpd", "bpd_nonfinite",
                   "cond_median", "cond_max", "cond_train_dtype_max", "logdet_error_max", "mse_1", "mse_1_max",
                   "mse_9", "mse_9_max", "pad_9", "recon_nonfinite_1", "recon_nonfinite_9",
                   "relative_max_1", "invertible", "recon_rel_max", "kappa_at_worst", "latent_mse", "latent_mse_max",
                   "latent_nonfinite"]
#: Reverse passes vectorised at once in the exact Jacobians (bounds memory for 28x28 and 32x32 images).
JACOBIAN_CHUNK = 128
#: The offset added to the analysis seed, so probe noise differs from training noise.
PROBE_SEED_OFFSET = 7919


@dataclass
class Probes:
    """The fixed inputs of an analysis: model-space images per set, the latent of the samples, descriptions."""

    sets: dict[str, Tensor]
    z: Tensor
    description: dict[str, str]


def make_probes(data: GlowData, latent_shape: Sequence[int], n: int, seed: int, *, ood: str = "auto",
                data_dir: Path = Path("data")) -> Probes:
    """The probe sets of :data:`PROBE_SETS` with ``n`` images each, all drawn from ``seed``."""
    g = torch.Generator().manual_seed(seed + PROBE_SEED_OFFSET)
    levels: dict[str, Tensor] = {"data": data.test.images[:n]}
    description = {"data": f"the first {min(n, len(data.test))} test images of {data.test.name}",
                   "samples": "the model's samples at temperature 1 from a fixed z",
                   "gaussian": "clip(0.5 + N(0, 1), 0, 1) per pixel, quantised",
                   "rademacher": "each pixel the lowest or highest level with probability 1/2"}
    levels["gaussian"] = noise_images("gaussian", n, data, g)
    levels["rademacher"] = noise_images("rademacher", n, data, g)
    found = ood_images(ood, n, data, g, data_dir=data_dir)
    if found is not None:
        levels["ood"], description["ood"] = found
    z = torch.randn((n, *latent_shape), generator=g, dtype=torch.float64)
    sets = {name: data.to_model(images, g) for name, images in levels.items()}
    return Probes(sets, z.to(data.device, data.dtype), description)


def sample(model: Flow, z: Tensor, temperature: float = 1.0) -> Tensor:
    """``f^-1(T z)`` without gradients; non-finite samples are returned as they are."""
    with torch.no_grad(), allow_nonfinite():
        return model.inverse(z * temperature)[0]


def model_bpd(model: Flow, x: Tensor, levels: int, chunk: int = 512) -> Tensor:
    """Bits per dimension of each image (no gradients; non-finite values are kept)."""
    out = []
    with torch.no_grad(), allow_nonfinite():
        for part in x.split(chunk):
            out.append(bits_per_dim(model.log_prob(part), part[0].numel(), levels))
    return torch.cat(out) if out else x.new_zeros(0)


def _finite_mean(values: Tensor) -> float:
    finite = values[torch.isfinite(values)].double()
    return float(finite.mean()) if finite.numel() else math.nan


def _max(values: Tensor) -> float:
    return float(values.double().nan_to_num(nan=math.inf, posinf=math.inf).max()) if values.numel() else math.nan


def measure_set(model: Flow, x: Tensor, *, levels: int, to_levels: Callable[[Tensor], Tensor], jacobian_samples: int,
                model64: Flow | None = None) -> dict[str, float]:
    """The analysis columns (see the module docstring) of one probe set ``x`` under ``model`` (in eval mode)."""
    ok = torch.isfinite(x.flatten(1)).all(dim=1)
    row: dict[str, float] = {"input_nonfinite": float((~ok).double().mean()) if len(x) else math.nan}
    finite_pixels = x[torch.isfinite(x)]
    row["input_max_abs"] = float(finite_pixels.abs().max()) if finite_pixels.numel() else math.nan
    x = x[ok]
    row["n"] = float(len(x))
    nan_columns = [c for c in ANALYSIS_FIELDS[6:] if c not in row and not c.startswith("latent")]
    if len(x) == 0:
        return {**row, **{c: math.nan for c in nan_columns}, "verdict": None}
    verdict = invertibility_verdict(model, x, kappa_at=1, fixed=[], max_exact_dims=4096)
    row.update(invertible=int(verdict.invertible), recon_rel_max=verdict.worst_relative,
               kappa_at_worst=verdict.at_worst.kappa_forward[0] if verdict.at_worst else math.nan,
               verdict=verdict.to_dict())
    bpd = model_bpd(model, x, levels)
    row["bpd"] = _finite_mean(bpd)
    row["bpd_nonfinite"] = float((~torch.isfinite(bpd)).double().mean())
    trips = repeated_round_trips(model, x, passes=9, to_pixels=to_levels)
    for k in (1, 9):
        mse = trips.mse[k - 1]
        row[f"mse_{k}"] = _finite_mean(mse)
        row[f"mse_{k}_max"] = _max(mse)
        row[f"recon_nonfinite_{k}"] = float((trips.nonfinite[k - 1] > 0).double().mean())
    row["relative_max_1"] = _max(trips.l2[0] / x.double().flatten(1).norm(dim=1))
    row["pad_9"] = _finite_mean(trips.pad[8])
    xj = x[:jacobian_samples]
    low = jacobian_stats(model, xj, inverse=False, chunk_size=JACOBIAN_CHUNK)
    row["cond_train_dtype_max"] = _max(low.condition_number)
    row["logdet_error_max"] = _max(low.logdet_error)
    model64 = model64 if model64 is not None else copy.deepcopy(model).double()
    high = jacobian_stats(model64, xj.double(), inverse=False, chunk_size=JACOBIAN_CHUNK)
    cond = high.condition_number.nan_to_num(nan=math.inf)
    row["cond_median"] = float(cond.median())
    row["cond_max"] = _max(cond)
    return row


def analyze_model(model: Flow, probes: Probes, data: GlowData, *, jacobian_samples: int) -> dict[str, dict[str, Any]]:
    """One row per probe set for one model state (the latent round trip in the samples' row)."""
    model.eval()
    model64 = copy.deepcopy(model).double()
    sets = dict(probes.sets)
    sets["samples"] = sample(model, probes.z)
    rows = {}
    for name in PROBE_SETS:
        if name in sets:
            rows[name] = measure_set(model, sets[name], levels=data.levels, to_levels=data.to_levels,
                                     jacobian_samples=jacobian_samples, model64=model64)
    rows["samples"].update(latent_round_trip(model, probes.z, sets["samples"]))
    return rows


def latent_round_trip(model: Flow, z: Tensor, samples: Tensor) -> dict[str, float]:
    """``latent_mse``, ``latent_mse_max`` and ``latent_nonfinite`` of ``f(f^-1(z))`` against ``z`` (the samples
    ``f^-1(z)`` given; non-finite samples count as non-finite round trips)."""
    with torch.no_grad(), allow_nonfinite():
        z_hat = model(samples)[0]
    err = (z_hat.double() - z.double()).flatten(1).pow(2).mean(dim=1)
    ok = torch.isfinite(err)
    return {"latent_mse": _finite_mean(err), "latent_mse_max": _max(err),
            "latent_nonfinite": float((~ok).double().mean()) if len(err) else math.nan}


def finite_rows(rows: Iterable[Mapping[str, str]], column: str) -> list[float]:
    """The column's values of CSV rows as floats ('' and unparsable as NaN)."""
    out = []
    for r in rows:
        try:
            out.append(float(r[column]))
        except (KeyError, ValueError):
            out.append(math.nan)
    return out


def _recon_figure(model: Flow, probes: Probes, data: GlowData, out: Path, title: str, per_set: int = 8) -> None:
    """Inputs of every probe set (8 each) above their reconstructions after 9 round trips and the differences."""
    sets = dict(probes.sets)
    sets["samples"] = sample(model, probes.z)
    inputs, recons = [], []
    with torch.no_grad(), allow_nonfinite():
        for name in PROBE_SETS:
            if name not in sets:
                continue
            x = sets[name][:per_set]
            current = x
            for _ in range(9):
                current = model.inverse(model(current)[0])[0]
            inputs.append(x)
            recons.append(current)
    image_grid(torch.cat(inputs).double().cpu(), torch.cat(recons).double().cpu(), out, ncol=per_set,
               value_range=(-0.5, 0.5), title=f"{title}: {', '.join(n for n in PROBE_SETS if n in sets)} "
                                               "(rows: input / after 9 round trips / |difference|)")


def analyze_runs(runs: Sequence[RunModel], data: GlowData, out: Path, *, analysis_samples: int, jacobian_samples: int,
                 ood: str, data_dir: Path, seed: int, device: torch.device,
                 progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Measure every snapshot of every run; write ``analysis.csv`` into each run and the combined one, the figures
    and ``probes.json`` into ``out``; return the rows."""
    if not runs:
        raise ValueError("analyze_runs: no model runs to analyse")
    latent = runs[0].build().latent_shape
    probes = make_probes(data, latent, analysis_samples, seed, ood=ood, data_dir=data_dir)
    out.mkdir(parents=True, exist_ok=True)
    combined_path = out / "analysis.csv"
    combined_path.unlink(missing_ok=True)
    combined = CsvLog(combined_path, ANALYSIS_FIELDS)
    rows: list[dict[str, Any]] = []
    try:
        for run in runs:
            own_path = run.path / "analysis.csv"
            if own_path != combined_path:
                own_path.unlink(missing_ok=True)
            own = CsvLog(own_path, ANALYSIS_FIELDS) if own_path != combined_path else None
            model = None
            for snap in snapshots(run.path):
                model = run.load(snap, device)
                if progress is not None:
                    progress(f"{run.name} step {snap.step}")
                for name, values in analyze_model(model, probes, data, jacobian_samples=jacobian_samples).items():
                    row = {"model": run.name, "step": snap.step, "set": name, **values}
                    rows.append(row)
                    cells = {k: v for k, v in row.items() if k in ANALYSIS_FIELDS}
                    combined.log(**cells)
                    if own is not None:
                        own.log(**cells)
            if own is not None:
                own.close()
            if model is not None:
                _recon_figure(model, probes, data, out / "plots" / f"recon_{run.name}.png",
                              f"{run.name}, last snapshot")
    finally:
        combined.close()
    write_json(out / "probes.json", {"sets": probes.description, "analysis_samples": analysis_samples,
                                      "jacobian_samples": jacobian_samples, "seed": seed})
    plot_analysis(read_csv(combined_path), out / "plots")
    return rows


#: The figures of :func:`plot_analysis`: file name -> (column, title, log scale).
FIGURES: dict[str, tuple[str, str, bool]] = {
    "analysis_cond": ("cond_max", "condition number of the Jacobian (float64, max)", True),
    "analysis_logdet_error": ("logdet_error_max", "log-det error (run dtype, max)", True),
    "analysis_mse_9": ("mse_9_max", "MSE after 9 round trips (max)", True),
    "analysis_recon_nonfinite": ("recon_nonfinite_9", "share of non-finite reconstructions (9 trips)", False),
    "analysis_bpd": ("bpd", "bits per dimension", False),
}
SAMPLE_PANELS = {"share of non-finite samples": ("input_nonfinite", False),
                 "largest |pixel| of the finite samples": ("input_max_abs", True),
                 "latent round trip z -> x -> z: max MSE": ("latent_mse_max", True)}


def plot_analysis(rows: Sequence[Mapping[str, str]], folder: Path) -> list[Path]:
    """One figure per quantity: a panel per probe set, a curve per model over the snapshots' steps; plus
    ``analysis_samples.png`` (share of non-finite samples, largest sample magnitude)."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    sets = [s for s in PROBE_SETS if any(r["set"] == s for r in rows)]
    written = []

    def curves(column: str, set_name: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        out = {}
        for m in models:
            mine = [r for r in rows if r["model"] == m and r["set"] == set_name]
            out[m] = (np.asarray(finite_rows(mine, "step")), np.asarray(finite_rows(mine, column)))
        return out

    for name, (column, title, log) in FIGURES.items():
        path = folder / f"{name}.png"
        line_panels({s: curves(column, s) for s in sets}, path, xlabel="training step", logy=log, title=title)
        written.append(path)
    path = folder / "analysis_samples.png"
    line_panels({title: curves(column, "samples") for title, (column, _) in SAMPLE_PANELS.items()}, path,
                xlabel="training step", logy=[log for _, log in SAMPLE_PANELS.values()],
                title="the model's own samples (data: |x| < 0.5)")
    written.append(path)
    return written


# ----------------------------------------------------------------------------------------------------------------
# Analysing run folders
# ----------------------------------------------------------------------------------------------------------------
class AnalysisError(ValueError):
    """Runs that cannot be analysed together (another data set or image shape)."""


def analyze_folders(folders: Sequence[Path], out: Path | None, args: argparse.Namespace,
                    device: torch.device) -> list[dict[str, Any]]:
    """Analyse the model runs found in ``folders`` (study folders or model folders); results go to ``out`` (or to
    the first folder). ``args`` gives ``--analysis-samples``, ``--jacobian-samples``, ``--ood`` and ``--data-dir``;
    unset sizes come from the first run."""
    runs = [load_run(p) for folder in folders for p in find_model_runs(folder)]
    if not runs:
        raise AnalysisError(f"no model runs found in {', '.join(map(str, folders))}")
    first = runs[0].args
    if any(r.args.dataset != first.dataset or list(r.args.shape) != list(first.shape) for r in runs):
        raise AnalysisError("the runs to analyse together must share the data set and image shape")
    data = load_data(argparse.Namespace(**{**vars(first), "augment": False}), device)
    target = out if out is not None else Path(folders[0])
    samples = args.analysis_samples or first.analysis_samples
    jac = args.jacobian_samples or first.jacobian_samples
    started = time.time()
    rows = analyze_runs(runs, data, target, analysis_samples=samples, jacobian_samples=jac, ood=args.ood,
                        data_dir=args.data_dir, seed=first.seed, device=device,
                        progress=lambda text: _log.info("analysing %s", text))
    _log.info("analysed %d runs in %.0f s; results in %s", len(runs), time.time() - started, target)
    return rows


def analyze_study(study: Any, args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    """The end of a study run (a :class:`~experiments.common.runs.Run` holding model runs): the stability analysis
    of its models (unless ``--no-analyze``), its last snapshots into the study's metrics. Returns the rows."""
    if args.no_analyze:
        return []
    rows = analyze_folders([study.path], study.path, args, device)
    study.update_metrics(last_snapshot=last_snapshot_table(rows), first_noninvertible_step=first_failures(rows))
    return rows


def first_failures(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """``{model: {set: the first analysed step whose verdict is non-invertible, -1 if none}}``."""
    out: dict[str, dict[str, int]] = {}
    for row in sorted(rows, key=lambda r: int(r["step"])):
        entry = out.setdefault(row["model"], {}).setdefault(row["set"], -1)
        if entry < 0 and row.get("invertible") == 0:
            out[row["model"]][row["set"]] = int(row["step"])
    return out


def analyze_only(args: argparse.Namespace, device: torch.device) -> int:
    """``--analyze RUN_FOLDER ...``: analyse finished runs without training, print the table; exit status 0."""
    print(summary(analyze_folders(args.analyze, args.out, args, device)))
    return 0


#: What the studies that train Glows and analyse them (``glow``, ``flowgan``) declare alike: runs named after the
#: data set, ``--analyze RUN_FOLDER ...`` as a task without a run folder, threads from the data set's sizes.
ANALYSED_STUDY: dict[str, Any] = {"name_keys": ("dataset",), "user_errors": (AnalysisError,), "threads": None,
                                  "task": ("analyze", analyze_only)}


def summary(rows: Sequence[dict[str, Any]], models: dict[str, dict[str, Any]] | None = None) -> str:
    """A plain-text table of the last snapshot of each model: one line per probe set."""
    lines = []
    if models:
        lines.append(f"{'model':<22}{'steps':>7}{'test bpd':>10}{'NaN samples':>13}{'seconds':>9}")
        for name, m in models.items():
            lines.append(f"{name:<22}{m.get('steps', 0):>7}{m.get('test_bpd', math.nan):>10.4f}"
                         f"{m.get('sample_nonfinite', math.nan):>13.3f}{m.get('seconds', math.nan):>9.0f}")
        lines.append("")
    table = last_snapshot_table(rows)
    if table:
        lines.append(f"{'model':<22}{'step':>7} {'set':<11}{'non-fin in':>11}{'bpd':>8}{'cond':>10}{'dlogdet':>10}"
                     f"{'mse_9 max':>11}{'non-fin rec':>12}  verdict")
    for name, sets in table.items():
        for set_name, r in sets.items():
            lines.append(f"{name:<22}{r['step']:>7} {set_name:<11}{r['input_nonfinite']:>11.3f}{r['bpd']:>8.3f}"
                         f"{r['cond_max']:>10.3g}{r['logdet_error_max']:>10.2g}{r['mse_9_max']:>11.3g}"
                         f"{r['recon_nonfinite_9']:>12.3f}  {_word(r.get('invertible'))}")
    return "\n".join(lines)


def _word(invertible: Any) -> str:
    return {1: "invertible", 0: "NON-INVERTIBLE"}.get(invertible, "n/a")


def last_snapshot_table(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``{model: {set: row}}`` of the last analysed snapshot of each model (rows without model and set)."""
    out: dict[str, Any] = {}
    for name in dict.fromkeys(r["model"] for r in rows):
        last = max(int(r["step"]) for r in rows if r["model"] == name)
        out[name] = {r["set"]: {k: v for k, v in r.items() if k not in ("model", "set")}
                     for r in rows if r["model"] == name and int(r["step"]) == last}
    return out
