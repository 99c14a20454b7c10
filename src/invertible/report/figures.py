"""The report's figures, drawn from the measurement data alone (so that a report's JSON can redraw them), as PNG
bytes. matplotlib (the ``experiments`` extra) is imported here only, with the Agg backend; without it the report
has no figures and says so.
"""

from __future__ import annotations

import io
import math
from typing import Any

__all__ = ["figures"]


def _value(v: Any) -> float:
    return float(v)  # the JSON's "inf", "-inf" and "nan" strings parse too


def _errors_figure(plt: Any, data: dict[str, Any]) -> Any:
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    rtol = _value(data["rtol"])
    ceiling = 1.0
    for result in data["sets"].values():
        finite = [_value(e) for e in result["errors"] if math.isfinite(_value(e))]
        ceiling = max([ceiling, *finite])
    top = ceiling * 100
    for result in data["sets"].values():
        values = sorted(min(_value(e), top) if not math.isnan(_value(e)) else top for e in result["errors"])
        values = [max(v, 1e-12) for v in values]
        n = len(values)
        ax.step(values, [(i + 1) / n for i in range(n)], where="post",
                label=f"{result['name']} ({result['label']})")
    ax.axvline(rtol, color="red", linestyle="--", linewidth=1, label=f"rtol {rtol:g}")
    ax.axvline(top, color="black", linestyle=":", linewidth=1, label="non-finite (drawn here)")
    ax.set_xscale("log")
    ax.set_xlabel("relative reconstruction error ||x - f^-1(f(x))|| / ||x||")
    ax.set_ylabel("fraction of inputs")
    ax.set_title("Reconstruction errors per input set (cumulative)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def _layers_figure(plt: Any, layers: dict[str, Any], rtol: float) -> Any:
    rows = layers["rows"]
    idx = list(range(len(rows)))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(7.5, 0.18 * len(rows)), 6), sharex=True)

    def series(key: str) -> list[float]:
        out = []
        for r in rows:
            v = r.get(key)
            v = math.nan if v is None else _value(v)
            out.append(v if v > 0 else math.nan)
        return out

    top.plot(idx, series("inverse_lipschitz"), "o-", markersize=3, label="measured 1/sigma_min (float64)")
    top.plot(idx, series("local_inverse"), "v", markersize=4, label="local bound on these inputs")
    top.plot(idx, series("bound_inverse"), "_", markersize=8, label="global bound (where one exists)")
    top.set_yscale("log")
    top.set_ylabel("Lip(f^-1) of the layer")
    worst = next((i for i, r in enumerate(rows) if r["layer"] == layers["worst_inverse"]), None)
    if worst is not None:
        top.axvline(worst, color="orange", linewidth=1, label=f"worst conditioned: {layers['worst_inverse']}")
    top.legend(fontsize=7)
    floor, ceiling = 1e-12, 1e30  # exact round trips (0) drawn at the floor, non-finite ones at the ceiling
    highest = rtol
    for key, label in (("round_trip", "own round trip"), ("inverse_pass_error", "inverse pass, reaching this layer")):
        raw = [_value(r[key]) for r in rows]
        values = [ceiling if not math.isfinite(v) else min(max(v, floor), ceiling) for v in raw]
        highest = max(highest, *values)
        bottom.plot(idx, values, "o-", markersize=3, label=label)
    bottom.set_ylim(floor / 10, highest * 100)
    bottom.axhline(rtol, color="red", linestyle="--", linewidth=1, label=f"rtol {rtol:g}")
    breaks = next((i for i, r in enumerate(rows) if r["layer"] == layers["breaks_at"]), None)
    if breaks is not None:
        bottom.axvline(breaks, color="red", linewidth=1, label=f"breaks at {layers['breaks_at']}")
    bottom.set_yscale("log")
    bottom.set_ylabel("relative error (working precision;\n0 at the bottom, non-finite at the top)", fontsize=8)
    bottom.set_xlabel("layer (forward order)")
    bottom.legend(fontsize=7)
    step = max(1, len(rows) // 40)
    bottom.set_xticks(idx[::step])
    bottom.set_xticklabels([rows[i]["layer"] for i in idx[::step]], rotation=90, fontsize=6)
    top.set_title(f"Layer by layer on {len(layers['indices'])} inputs of {layers['set']}")
    fig.tight_layout()
    return fig


def figures(data: dict[str, Any]) -> dict[str, bytes]:
    """``{name: PNG bytes}``: ``errors`` and (when measured) ``layers``; empty without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}
    made = {"errors": _errors_figure(plt, data)}
    if "layers" in data:
        made["layers"] = _layers_figure(plt, data["layers"], _value(data["rtol"]))
    out = {}
    for name, fig in made.items():
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110)
        plt.close(fig)
        out[name] = buffer.getvalue()
    return out
