"""Calibrates the error model of ``check_invertible`` against the mpmath reference (50 digits), over the registry.

For each tiny configuration of each registered example (:func:`invertible.reference.tiny_configurations`), the
module runs in float64 and, as a copy, in float32; both are compared with the reference evaluated at exactly their
own parameters and input, so the figures are pure arithmetic error (no parameter rounding). Each error is given in
units of the error model of :mod:`invertible.testing.tolerances` (``u`` the unit round-off of the dtype):

- output ``||f(x) - f_ref(x)||`` in units of ``u E_f``, ``E_f = || |J_f| |x| || + ||y||``;
- inverse ``||f^-1(y_ref) - x||`` (``y_ref`` rounded to the dtype) in units of ``u E_g``,
  ``E_g = || |J_g| |y| || + ||x||``;
- round trips ``x -> y -> x`` and ``y -> x -> y`` in units of ``u E_g`` and ``u E_f``;
- log-dets (both directions) in units of ``u (D + T)``, ``T`` the sum of the leaf layers' ``|logdet|``;
- and, for comparison, the output error in units of the former model's ``u kappa scale``.

Iterative inverses (residual blocks) are left out of the inverse and round-trip columns: their stopping rule's
allowance comes on top (``fixed_point_allowance``). The worst ratio of each kind chooses the constants
``ROUNDTRIP_K`` and ``LOGDET_K`` (about 4x the worst).

Run: ``python benchmarks/float32_error.py`` (a few minutes on one core); writes
``benchmarks/results/float32_error.md``.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import numpy as np
import torch

from invertible.base import allow_nonfinite
from invertible.reference import compare_with_reference, missing_references, tiny_case, tiny_configurations
from invertible.testing.tolerances import LOGDET_K, ROUNDTRIP_K, exact_error_scales

COLUMNS = ("output", "inverse", "x->y->x", "y->x->y", "log-det")


def ratios(module: torch.nn.Module, x: torch.Tensor, iterative: bool) -> dict[str, float]:
    """Worst ratio over the batch of each error to its model scale, for ``module`` in ``x``'s dtype."""
    u = torch.finfo(x.dtype).eps
    scales = exact_error_scales(module, x)
    c = compare_with_reference(module, x)
    with torch.no_grad(), allow_nonfinite():
        y, _ = module(x)
        x_back, _ = module.inverse(y)
        y_again, _ = module(x_back)
    b = x.shape[0]
    norm = lambda t: t.reshape(b, -1).double().norm(dim=1).numpy()  # noqa: E731
    e_f, e_g = scales.forward_eval.numpy(), scales.inverse_eval.numpy()
    ld = np.maximum(c.logdet_error, c.inverse_logdet_error) / (u * scales.logdet_terms.numpy())
    out = {"output": float((c.output_error / (u * e_f)).max()), "log-det": float(ld.max()),
           "kappa model": float((c.output_error / (u * scales.condition_number.numpy() * c.scale)).max())}
    if not iterative:
        out["inverse"] = float((c.inverse_error / (u * e_g)).max())
        out["x->y->x"] = float((norm(x_back.double() - x.double()) / (u * e_g)).max())
        out["y->x->y"] = float((norm(y_again.double() - y.double()) / (u * e_f)).max())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "float32_error.md")
    parser.add_argument("--only", default="", help="substring of the example ids to run")
    args = parser.parse_args()
    torch.set_num_threads(1)

    header = ("| example | D | kappa | " + " | ".join(f"f32 {c}" for c in COLUMNS) + " | "
              + " | ".join(f"f64 {c}" for c in COLUMNS) + " | f32 output / (u kappa scale) |")
    rows = [header, "|" + "---|" * (4 + 2 * len(COLUMNS))]
    worst = {(dt, c): (0.0, "") for dt in ("f32", "f64") for c in (*COLUMNS, "kappa model")}
    at_max_kappa = (0.0, 0.0, "")
    for case_id, name, config, analytic in tiny_configurations():
        if args.only not in case_id:
            continue
        case = tiny_case(name, config)
        if not analytic or missing_references(case.module):
            rows.append(f"| {case_id} | {case.dims} | not covered by the reference |" + " |" * (2 * len(COLUMNS)))
            continue
        iterative = case.module.inverse_kind == "iterative"
        kappa = float(exact_error_scales(case.module, case.x).condition_number.max())
        cells = []
        for dt, dtype in (("f32", torch.float32), ("f64", torch.float64)):
            module = copy.deepcopy(case.module).to(dtype)
            r = ratios(module, case.x.to(dtype), iterative)
            for col, value in r.items():
                if value > worst[(dt, col)][0]:
                    worst[(dt, col)] = (value, case.id)
            cells += [f"{r[c]:.2f}" if c in r else "(iterative)" for c in COLUMNS]
            if dt == "f32":
                kappa_cell = f"{r['kappa model']:.3f}"
                if kappa > at_max_kappa[0]:
                    at_max_kappa = (kappa, r["kappa model"], case.id)
        rows.append(f"| {case.id} | {case.dims} | {kappa:.3g} | " + " | ".join(cells) + f" | {kappa_cell} |")
        print(rows[-1], file=sys.stderr, flush=True)

    rt = max(v for (dt, c), (v, _) in worst.items() if c in ("output", "inverse", "x->y->x", "y->x->y"))
    ld = max(v for (dt, c), (v, _) in worst.items() if c == "log-det")
    summary = ["", "Worst ratios (the example where measured):", ""]
    summary += [f"- {dt} {c}: {v:.3f} ({where})" for (dt, c), (v, where) in worst.items()]
    summary += ["", f"Round trips and evaluations: worst {rt:.2f}; ROUNDTRIP_K = {ROUNDTRIP_K:g} "
                f"({ROUNDTRIP_K / rt:.1f}x the worst). Log-dets: worst {ld:.2f}; LOGDET_K = {LOGDET_K:g} "
                f"({LOGDET_K / ld:.1f}x the worst).",
                f"The former model ``u kappa scale`` reached {worst[('f32', 'kappa model')][0]:.2f} at most (its "
                f"K = 100 left {100 / worst[('f32', 'kappa model')][0]:.0f}x slack), and {at_max_kappa[1]:.2g} at "
                f"the largest kappa measured ({at_max_kappa[0]:.3g}, {at_max_kappa[2]})."]
    table = "\n".join(rows + summary)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("# Errors against the mpmath reference, in units of the error model (tiny configurations)\n\n"
                        + __doc__.split("\n\n")[1] + "\n\n" + table + "\n")
    print(table)


if __name__ == "__main__":
    main()
