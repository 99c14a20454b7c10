"""float64 and float32 errors of every registered layer and model against the mpmath reference (50 digits).

For each tiny configuration of each registered example (:func:`invertible.reference.tiny_configurations`), the
module runs in float64 and, as a copy, in float32; both are compared with the reference evaluated at exactly their own
parameters and input, so the figures are pure arithmetic error (no parameter rounding). Errors are relative:
outputs and inverses to ``max(||x||, ||y||, 1)``, log-dets to ``max(|logdet|, 1)``; the last column is the float32
output error in units of ``u32 * kappa * scale`` (the test suite asserts it stays below 100).

Run: ``python benchmarks/float32_error.py`` (about a minute); writes ``benchmarks/results/float32_error.md``.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

from invertible.reference import (
    compare_with_reference,
    has_reference,
    missing_references,
    tiny_case,
    tiny_configurations,
)
from invertible.testing import exact_jacobian, get_example

U32 = torch.finfo(torch.float32).eps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "float32_error.md")
    parser.add_argument("--only", default="", help="substring of the example ids to run")
    args = parser.parse_args()
    torch.set_num_threads(1)

    header = ("| example | D | kappa | f64 output | f64 log-det | f64 inverse | f32 output | f32 log-det | "
              "f32 inverse | f32 output / (u kappa scale) |")
    rows = [header, "|" + "---|" * 10]
    worst = 0.0
    for case_id, name, config, analytic in tiny_configurations():
        if args.only not in case_id:
            continue
        layer = get_example(name).layer
        if not analytic or (layer is not None and not has_reference(layer)):
            rows.append(f"| {case_id} | | not covered by the reference |" + " |" * 7)
            continue
        case = tiny_case(name, config)
        if missing_references(case.module):
            rows.append(f"| {case_id} | {case.dims} | not covered by the reference |" + " |" * 7)
            continue
        sv = torch.linalg.svdvals(exact_jacobian(lambda v, m=case.module: m(v)[0], case.x)).detach()
        kappa = (sv[:, 0] / sv[:, -1]).numpy()
        c64 = compare_with_reference(case.module, case.x)
        c32 = compare_with_reference(copy.deepcopy(case.module).float(), case.x.float())
        units = c32.output_error / (U32 * kappa * c32.scale)
        worst = max(worst, float(units.max()))
        figures = [f for c in (c64, c32)
                   for f in (c.output_error / c.scale, c.logdet_error / c.logdet_scale, c.inverse_error / c.scale)]
        cells = " | ".join(f"{float(f.max()):.1e}" for f in figures)
        rows.append(f"| {case.id} | {case.dims} | {float(kappa.max()):.3g} | {cells} | {float(units.max()):.2f} |")
        print(rows[-1], file=sys.stderr, flush=True)
    rows += ["", f"Largest float32 output error: {worst:.2f} u32 kappa scale (u32 = {U32:.3g}); errors are maxima "
             "over the batch of 2, relative to max(||x||, ||y||, 1) (log-dets: max(|logdet|, 1))."]
    table = "\n".join(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("# Errors against the mpmath reference (tiny configurations)\n\n" + table + "\n")
    print(table)


if __name__ == "__main__":
    main()
