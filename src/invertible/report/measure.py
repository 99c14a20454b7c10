"""The measurements of a report, computed once as plain data (:func:`measure` returns a JSON-able dict).

For every input set, the library's one verdict (:func:`~invertible.diagnostics.invertibility_verdict`, threshold
:data:`~invertible.diagnostics.NONINVERTIBLE_RTOL`): every input reconstructed in the working precision, the
relative errors and non-finite counts, and the condition number (float64 copy; exact Jacobians up to
``max_exact_dims`` entries per input, the matrix-free estimator above) at the worst-reconstructed and at a typical
(median-error) input.

Layer by layer, on the *probe inputs* (the worst-reconstructed inputs of the worst set):

- :func:`~invertible.bounds.stability_report` on a float64 copy: each layer's global and local analytic bounds
  beside its measured ``sigma_max`` and ``1 / sigma_min``, naming the layer whose inverse is worst conditioned;
- in the working precision, each layer's own round trip at its input, and the reconstruction error as the inverse
  pass walks back through the layers: the first layer (walking back from the output) after whose inverse the
  reconstruction is off by more than ``rtol`` or non-finite is where reconstruction *breaks*; iterative inverses
  (residual blocks) report how their fixed-point iteration ended (iterations, residual, convergence).

Iterative inverses run with ``on_failure="return"`` throughout: a non-converged inverse is measured, not raised.

Optionally, the invertibility attack (:func:`~invertible.attack.invertibility_attack`) in an l-inf ball around
the first inputs of the first set, judged by the same definition.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..attack import invertibility_attack
from ..base import InvertibleModule, Sequential, allow_nonfinite, iterative_inverse
from ..bounds import stability_report
from ..diagnostics import NONINVERTIBLE_RTOL, eval_mode, invertibility_verdict, judge_reconstructions

__all__ = ["Options", "measure", "flat_layers"]


@dataclass
class Options:
    """What to measure and how much of it (the defaults are the stated budget).

    Attributes:
        rtol: the verdict's threshold (the library's).
        kappa: measure condition numbers at the worst and a typical input of every set.
        max_exact_dims: exact Jacobians up to this many entries per input, matrix-free above.
        layer_inputs: probe inputs for the per-layer table (0 skips it).
        attack_inputs, attack_steps, attack_radius: the attack on this many inputs of the first set, this many
            sign-gradient steps, in an l-inf ball of this radius in the flow's input units (0 steps skips it).
        batch_size: reconstruction batch size.
        gradient_inputs: memory-saving gradient self-check (:func:`~invertible.memory.saving.compare_gradients`,
            loss ``sum f(x)^2``) on this many inputs of the first set; 0 skips it.
        samples: draw this many samples (``flow.sample``, generative flows only) and judge their reconstruction as
            the set ``samples``; 0 skips it.
    """

    rtol: float = NONINVERTIBLE_RTOL
    kappa: bool = True
    max_exact_dims: int = 1024
    layer_inputs: int = 8
    attack_inputs: int = 8
    attack_steps: int = 20
    attack_radius: float = 0.05
    batch_size: int = 256
    gradient_inputs: int = 0
    samples: int = 0


def _num(v: float) -> float | str:
    """A float for JSON: non-finite values become the strings ``"inf"``, ``"-inf"``, ``"nan"``."""
    v = float(v)
    return v if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))


def clean(obj: Any) -> Any:
    """``obj`` with every float made JSON-safe (:func:`_num`), tuples as lists."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, float):
        return _num(obj)
    return obj


def flat_layers(flow: InvertibleModule, prefix: str = "") -> list[tuple[str, InvertibleModule]]:
    """``(label, layer)`` in forward order, nested :class:`~invertible.Sequential` expanded, labelled as
    :func:`~invertible.bounds.stability_report` labels them (``"3.1:AffineCoupling"``); a wrapper names the layer it
    wraps (``"22:Partial(AffineCoupling)"``).

    Example:
        >>> import invertible
        >>> flow = invertible.Sequential(invertible.ActNorm(2), invertible.Sequential(invertible.ActNorm(2)))
        >>> [label for label, _ in flat_layers(flow)]
        ['0:ActNorm', '1.0:ActNorm']
    """
    if not isinstance(flow, Sequential):
        return [(f"0:{type(flow).__name__}", flow)]
    out: list[tuple[str, InvertibleModule]] = []
    for i, layer in enumerate(flow):
        label = f"{prefix}{i}"
        if isinstance(layer, Sequential):
            out += flat_layers(layer, label + ".")
        else:
            inner = getattr(layer, "layer", None)  # a wrapper (Partial, MemorySaving, ...) names what it wraps
            name = type(layer).__name__ + (f"({type(inner).__name__})" if isinstance(inner, InvertibleModule) else "")
            out.append((f"{label}:{name}", layer))
    return out


def _relative(x_hat: Tensor, x: Tensor) -> Tensor:
    """Per-sample ``||x_hat - x|| / ||x||`` in float64; Inf where ``x_hat`` is not finite."""
    flat, flat_hat = x.reshape(x.shape[0], -1).double(), x_hat.reshape(x.shape[0], -1).double()
    rel = (flat_hat - flat).norm(dim=1) / flat.norm(dim=1).clamp_min(torch.finfo(torch.float64).tiny)
    bad = ~torch.isfinite(flat_hat).all(dim=1)
    return torch.where(bad, torch.full_like(rel, math.inf), rel)


def _worst(t: Tensor) -> float:
    t = t.double().nan_to_num(nan=math.inf, posinf=math.inf)
    return float(t.max()) if t.numel() else math.nan


def layer_walk(flow: InvertibleModule, x: Tensor, rtol: float) -> dict[str, Any]:
    """Per layer, in the working precision at the inputs ``x``: the layer's own round-trip error at its input and
    the error of the reconstruction of its input as the whole inverse pass reaches it; ``breaks_at`` is the first
    layer, walking back from the output, where that exceeds ``rtol`` (``None`` when none does)."""
    layers = flat_layers(flow)
    acts = [x]
    with eval_mode(flow), torch.no_grad(), allow_nonfinite():
        for _, layer in layers:
            acts.append(layer(acts[-1])[0])
        own = [_relative(layer.inverse(layer(a)[0])[0], a) for (_, layer), a in zip(layers, acts)]
        h = acts[-1]
        back: list[Tensor] = [torch.empty(0)] * len(layers)
        solver: list[dict[str, Any] | None] = [None] * len(layers)
        for i in range(len(layers) - 1, -1, -1):
            layer = layers[i][1]
            h = layer.inverse(h)[0]
            back[i] = _relative(h, acts[i])
            ended = getattr(layer, "last_inverse", None)  # an iterative inverse reports how it ended
            if ended is not None:
                solver[i] = {"iterations": ended.iterations, "residual": ended.residual,
                             "converged": ended.converged, "contraction": ended.contraction}
    breaks_at = None
    for i in range(len(layers) - 1, -1, -1):
        if not bool((back[i] <= rtol).all()):
            breaks_at = layers[i][0]
            break
    rows = [{"layer": label, "round_trip": _worst(o), "inverse_pass_error": _worst(b),
             "inputs_above_rtol": int((~(b <= rtol)).sum()), "nonfinite_output": int((~torch.isfinite(
                 a.reshape(a.shape[0], -1))).any(dim=1).sum()), **({"inverse_solver": it} if it else {})}
            for (label, _), o, b, a, it in zip(layers, own, back, acts[1:], solver)]
    iterative = [r for r in solver if r is not None]
    convergence = None if not iterative else {
        "blocks": len(iterative), "not_converged": sum(not r["converged"] for r in iterative),
        "max_iterations": max(r["iterations"] for r in iterative),
        "max_residual": max(r["residual"] for r in iterative)}
    return {"rows": rows, "breaks_at": breaks_at, "convergence": convergence}


def layer_table(flow: InvertibleModule, x: Tensor, max_exact_dims: int) -> tuple[list[dict[str, Any]], list[str]]:
    """Per layer, on a float64 copy at each layer's own inputs: :func:`~invertible.bounds.stability_report` of the
    layer alone (global and local bounds beside measured ``sigma_max`` and ``1 / sigma_min``; ``round_trip_float64``
    its own round trip). A layer whose measurement fails (e.g. a Jacobian with non-finite entries) gets NaN
    measurements and the reason, its bounds where they can be had; NaN ranks as the worst inverse."""
    flow64 = copy.deepcopy(flow).double()
    rows, violations = [], []
    current = x.double()
    with eval_mode(flow64):
        for label, layer in flat_layers(flow64):
            try:
                with allow_nonfinite():
                    table = stability_report(layer, current, max_exact_dims=max_exact_dims, whole_model=False,
                                             flatten=False)
                row = table.rows()[0]
                row["round_trip_float64"] = row.pop("reconstruction")
                violations += [v.replace(table.layers[0].label, label) for v in table.violations(rtol=1e-6)]
            except (RuntimeError, ValueError) as exc:
                bounds = layer.lipschitz_bounds()
                row = {"bound_forward": bounds.forward, "local_forward": None, "sigma_max": math.nan,
                       "bound_inverse": bounds.inverse, "local_inverse": None, "inverse_lipschitz": math.nan,
                       "round_trip_float64": math.nan, "method": f"failed: {str(exc).splitlines()[0][:120]}"}
            row["layer"] = label
            rows.append(row)
            with torch.no_grad(), allow_nonfinite():
                current = layer(current)[0]
    return rows, violations


def _kappa(flow: InvertibleModule, x: Tensor, verdict_errors: Tensor, opts: Options) -> dict[str, Any]:
    """Condition numbers at the worst-reconstructed and at the median-error input (the library's ConditionAt)."""
    order = torch.argsort(verdict_errors, descending=True, stable=True)
    worst, typical = int(order[0]), int(order[len(order) // 2])
    try:
        sub = invertibility_verdict(flow, x[[worst, typical]], rtol=opts.rtol, kappa_at=1, fixed=[1],
                                    max_exact_dims=opts.max_exact_dims)
    except (RuntimeError, ValueError) as exc:  # e.g. an SVD of a Jacobian with non-finite entries
        failed = {"kappa_forward": math.nan, "kappa_inverse": math.nan, "lipschitz_forward": math.nan,
                  "lipschitz_inverse": math.nan, "method": f"failed: {str(exc).splitlines()[0][:120]}"}
        return {"worst": {"index": worst, "relative_error": float(verdict_errors[worst]), **failed},
                "typical": {"index": typical, "relative_error": float(verdict_errors[typical]), **failed}}
    out: dict[str, Any] = {}
    for key, at, index in (("worst", sub.at_worst, worst), ("typical", sub.at_fixed, typical)):
        assert at is not None
        out[key] = {"index": index, "relative_error": float(verdict_errors[index]),
                    "kappa_forward": at.kappa_forward[0], "kappa_inverse": at.kappa_inverse[0],
                    "lipschitz_forward": at.lipschitz_forward[0], "lipschitz_inverse": at.lipschitz_inverse[0],
                    "method": at.method}
    return out


def _set_result(flow: InvertibleModule, name: str, x: Tensor, opts: Options,
                step: Callable[[str], None]) -> tuple[dict[str, Any], Tensor]:
    step(f"reconstruct {name}")
    verdict = invertibility_verdict(flow, x, rtol=opts.rtol, batch_size=opts.batch_size, kappa_at=0)
    errors = verdict.relative_errors
    assert errors is not None
    finite = errors[torch.isfinite(errors)]
    result: dict[str, Any] = {
        "name": name, "n": verdict.n, "shape": list(x.shape[1:]), "verdict": verdict.to_dict(),
        "label": verdict.label, "nonfinite": verdict.nonfinite, "above_rtol": verdict.above_rtol,
        "median": float(errors.median()), "worst": verdict.worst_relative, "worst_index": verdict.worst_index,
        "finite_max": float(finite.max()) if finite.numel() else math.nan,
        "failing_indices": [int(i) for i in torch.nonzero(~(errors <= opts.rtol)).reshape(-1)],
        "errors": [float(e) for e in errors],
    }
    if opts.kappa:
        step(f"condition numbers {name}")
        result["kappa"] = _kappa(flow, x, errors, opts)
    return result, errors


def _attack(flow: InvertibleModule, name: str, x: Tensor, opts: Options) -> dict[str, Any]:
    x = x[: opts.attack_inputs]
    result = invertibility_attack(flow, x, radius=opts.attack_radius, step_size=opts.attack_radius / 10,
                                  steps=opts.attack_steps, generator=torch.Generator().manual_seed(0))
    norms = x.reshape(x.shape[0], -1).double().norm(dim=1)
    relative = result.max_error.double() / norms.clamp_min(torch.finfo(torch.float64).tiny)
    verdict = judge_reconstructions(relative, ~torch.isfinite(relative), rtol=opts.rtol, dtype=x.dtype)
    return {"set": name, "n": x.shape[0], "radius": opts.attack_radius, "steps": opts.attack_steps,
            "step_size": opts.attack_radius / 10, "verdict": verdict.to_dict(), "label": verdict.label,
            "clean_worst": _worst(result.clean_error.double() / norms),
            "attacked_worst": _worst(relative), "growth_max": _worst(result.growth.double())}


def _gradient_check(flow: InvertibleModule, name: str, x: Tensor) -> dict[str, Any]:
    from ..memory.check import GradientMismatchWarning
    from ..memory.saving import compare_gradients

    with eval_mode(flow), allow_nonfinite(), warnings.catch_warnings():
        warnings.simplefilter("ignore", GradientMismatchWarning)  # the disagreement is what the report records
        check = compare_gradients(flow, lambda m: m(x)[0].pow(2).sum())
    return {"set": name, "n": x.shape[0], "angle": check.angle, "rel_error": check.rel_error,
            "reconstruction_error": check.reconstruction_error, "finite": check.finite, "agreed": check.agreed}


def add_samples(flow: InvertibleModule, sets: dict[str, Tensor], n: int, seed: int = 0) -> dict[str, Any]:
    """Add ``n`` samples of a generative flow to ``sets`` as ``"samples"``; how many are non-finite."""
    sample = getattr(flow, "sample", None)
    if sample is None or not hasattr(flow, "latent_shape"):
        return {"n": 0, "note": f"{type(flow).__name__} has no sample(); no samples drawn"}
    with eval_mode(flow), torch.no_grad():
        x = sample(n, generator=torch.Generator().manual_seed(seed))
    sets["samples"] = x
    return {"n": n, "nonfinite": int((~torch.isfinite(x.reshape(n, -1))).any(dim=1).sum())}


def measure(flow: InvertibleModule, sets: dict[str, Tensor], opts: Options | None = None, *,
            step: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every number of the report as plain data (floats may be Inf/NaN here; :func:`clean` makes them JSON-safe).

    ``step(description)`` is called before each unit of work (:func:`n_steps` of them), e.g. to move a progress
    bar.
    """
    with iterative_inverse(on_failure="return"):  # a non-converged iterative inverse is measured, not raised
        return _measure(flow, sets, opts or Options(), step or (lambda _: None))


def _measure(flow: InvertibleModule, sets: dict[str, Tensor], opts: Options, step: Callable[[str], None]
             ) -> dict[str, Any]:
    start = time.perf_counter()
    results, errors = {}, {}
    for name, x in sets.items():
        results[name], errors[name] = _set_result(flow, name, x, opts, step)
    failing = [n for n, r in results.items() if r["label"] != "invertible"]
    # the per-layer table runs on the first failing set (the model's data come first), else on the worst one
    probe_set = failing[0] if failing else max(results, key=lambda n: _worst(torch.tensor([results[n]["worst"]])))
    out: dict[str, Any] = {
        "rtol": opts.rtol, "dtype": str(next((p.dtype for p in flow.parameters()), torch.float32)).replace(
            "torch.", ""),
        "options": dict(opts.__dict__), "sets": results, "failing_sets": failing,
    }
    if opts.layer_inputs > 0:
        step("layer by layer")
        order = torch.argsort(errors[probe_set], descending=True, stable=True)[: opts.layer_inputs]
        probe = sets[probe_set][order]
        walk = layer_walk(flow, probe, opts.rtol)
        rows, violations = layer_table(flow, probe, opts.max_exact_dims)
        for row, extra in zip(rows, walk["rows"]):
            assert row["layer"] == extra["layer"]
            row.update({k: v for k, v in extra.items() if k != "layer"})
        worst_row = max(rows, key=lambda r: _worst(torch.tensor([r["inverse_lipschitz"]])))
        out["layers"] = {"set": probe_set, "indices": [int(i) for i in order], "rows": rows,
                         "worst_inverse": worst_row["layer"], "worst_inverse_value": worst_row["inverse_lipschitz"],
                         "breaks_at": walk["breaks_at"], "violations": violations, "breaks_per_set": {},
                         "convergence": walk["convergence"]}
        for name in failing:  # where reconstruction breaks on each failing set's worst inputs (cheap)
            worst = torch.argsort(errors[name], descending=True, stable=True)[: opts.layer_inputs]
            walked = walk if name == probe_set else layer_walk(flow, sets[name][worst], opts.rtol)
            out["layers"]["breaks_per_set"][name] = {"breaks_at": walked["breaks_at"],
                                                     "indices": [int(i) for i in worst]}
    if opts.attack_steps > 0 and opts.attack_inputs > 0:
        step("attack")
        first = next(iter(sets))
        out["attack"] = _attack(flow, first, sets[first], opts)
    if opts.gradient_inputs > 0:
        step("gradient self-check")
        first = next(iter(sets))
        out["gradient_check"] = _gradient_check(flow, first, sets[first][: opts.gradient_inputs])
    judged = [r["label"] for r in results.values()] + ([out["attack"]["label"]] if "attack" in out else [])
    out["invertible"] = all(label == "invertible" for label in judged)
    out["label"] = "invertible" if out["invertible"] else "non-invertible"
    out["seconds"] = time.perf_counter() - start
    return out


def n_steps(n_sets: int, opts: Options) -> int:
    """How many times :func:`measure` calls ``step``."""
    return (n_sets * (2 if opts.kappa else 1) + (opts.layer_inputs > 0) + (opts.attack_steps > 0 < opts.attack_inputs)
            + (opts.gradient_inputs > 0))
