"""One rendering of a report's data into blocks, written out as Markdown, self-contained HTML (figures embedded as
base64 PNG) and a one-screen terminal summary. Everything here reads the JSON-able report dict only, so a report
can be re-rendered from its ``report.json``.
"""

from __future__ import annotations

import base64
import html
import math
import re
from typing import Any

__all__ = ["blocks", "to_html", "to_markdown", "summary"]

Block = tuple[Any, ...]


def fmt(v: Any, digits: int = 3) -> str:
    """A number for a table: ``-`` for missing, ``inf``/``nan`` as they are, else ``digits`` significant digits.

    Example:
        >>> fmt(None), fmt("inf"), fmt(0.000123456), fmt(3)
        ('-', 'inf', '0.000123', '3')
    """
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if isinstance(v, bool) or isinstance(v, int):
        return str(v)
    return f"{v:.{digits}g}" if math.isfinite(v) else str(v)


def _where(m: dict[str, Any]) -> list[str]:
    out = []
    layers = m.get("layers")
    if m["failing_sets"]:
        for name in m["failing_sets"]:
            r = m["sets"][name]
            shown = ", ".join(map(str, r["failing_indices"][:12])) + (" ..." if len(r["failing_indices"]) > 12 else "")
            out.append(f"Set `{name}`: {r['verdict']['reason']}; failing inputs (indices) {shown}.")
    if layers is not None:
        if layers["breaks_at"] is not None:
            out.append(f"Reconstruction first breaks at layer **{layers['breaks_at']}**: walking the inverse back "
                       f"from the output on the {len(layers['indices'])} worst inputs of `{layers['set']}` "
                       f"(indices {', '.join(map(str, layers['indices']))}), its inverse is the first to leave the "
                       f"reconstruction off by more than rtol or non-finite.")
        others = {n: b for n, b in layers["breaks_per_set"].items() if n != layers["set"]}
        for name, b in others.items():
            out.append(f"On the worst inputs of `{name}` (indices {', '.join(map(str, b['indices']))}) reconstruction "
                       f"first breaks at layer **{b['breaks_at']}**.")
        out.append(f"The worst-conditioned inverse is layer **{layers['worst_inverse']}** "
                   f"(1/sigma_min = {fmt(layers['worst_inverse_value'])} on those inputs).")
    return out


def blocks(report: dict[str, Any], figure_names: list[str]) -> list[Block]:
    """The report as blocks: ``("h1"|"h2"|"p", text)``, ``("list", items)``, ``("table", header, rows)``,
    ``("figure", name, caption)``; text uses ``**bold**`` and `` `code` `` only."""
    m, model = report["measurement"], report["model"]
    out: list[Block] = [("h1", f"Stability report: {model['name']}")]
    out.append(("p", f"Model: {model['source']}; input shape {tuple(model['input_shape'])}, "
                     f"{model['parameters']:,} parameters, working precision {m['dtype']}. "
                     f"Written {report['created']} by `{report['command']}`."))
    judged = {f"`{n}`": r["label"] for n, r in m["sets"].items()}
    if "attack" in m:
        judged["the attack"] = m["attack"]["label"]
    fails = [n for n, label in judged.items() if label != "invertible"]
    passes = [n for n, label in judged.items() if label == "invertible"]
    where = (f"fails on {', '.join(fails)}" + (f"; passes on {', '.join(passes)}" if passes else "")) if fails \
        else f"passes on {', '.join(passes)}"
    out.append(("p", f"**Verdict: {m['label']}**: {where} (rtol {fmt(m['rtol'])}). Numerically non-invertible "
                     "means, for at least one input, a non-finite reconstruction or one off by more than rtol "
                     "relative to the input (`invertible.diagnostics.verdict`, the one definition every study uses)."))
    where = _where(m)
    if where:
        out += [("h2", "Where and why"), ("list", where)]
    out.append(("h2", "Input sets"))
    out.append(("p", f"Every input reconstructed in {m['dtype']}; relative error `||x - f^-1(f(x))|| / ||x||`. "
                     "kappa: condition number of the Jacobian on a float64 copy (exact or matrix-free: the "
                     f"method column) at the worst-reconstructed and at the median-error input. {model['unit_note']}."))
    rows = []
    for r in m["sets"].values():
        k = r.get("kappa", {})
        rows.append([f"`{r['name']}`", str(r["n"]), r["label"], str(r["nonfinite"]), str(r["above_rtol"]),
                     fmt(r["median"]), f"{fmt(r['worst'])} (#{r['worst_index']})",
                     fmt(k.get("worst", {}).get("kappa_forward")), fmt(k.get("typical", {}).get("kappa_forward")),
                     k.get("worst", {}).get("method", "-")])
    out.append(("table", ["set", "n", "verdict", "non-finite", "above rtol", "median error", "worst error (input)",
                          "kappa at worst", "kappa typical", "method"], rows))
    if "attack" in m:
        a = m["attack"]
        out.append(("h2", "Invertibility attack"))
        out.append(("p", f"Projected sign-gradient ascent on the reconstruction error of the first {a['n']} inputs "
                         f"of `{a['set']}`, in the l-inf ball of radius {fmt(a['radius'])} (input units), "
                         f"{a['steps']} steps of {fmt(a['step_size'])}, random start. Worst relative error "
                         f"{fmt(a['clean_worst'])} before, {fmt(a['attacked_worst'])} after (growth up to "
                         f"{fmt(a['growth_max'])}x): **{a['label']}** ({a['verdict']['reason']})."))
    if "samples" in m:
        smp = m["samples"]
        out.append(("h2", "Samples"))
        out.append(("p", smp.get("note") or f"{smp['n']} samples `f^-1(z)`, `z ~ N(0, I)` (seeded), of which "
                    f"{smp['nonfinite']} are non-finite; their reconstruction is judged as the set `samples`."))
    if "gradient_check" in m:
        g = m["gradient_check"]
        out.append(("h2", "Memory-saving gradient self-check"))
        out.append(("p", f"Parameter gradients of `sum f(x)^2` on the first {g['n']} inputs of `{g['set']}`, "
                         "memory-saving backprop (activations rebuilt by the inverse) against standard autograd: "
                         f"**{'agree' if g['agreed'] else 'DISAGREE'}** (angle {fmt(g['angle'])} rad, relative "
                         f"error {fmt(g['rel_error'])}, rebuilt-input error {fmt(g['reconstruction_error'])})."))
    if "layers" in m:
        layers = m["layers"]
        out.append(("h2", "Layer by layer"))
        out.append(("p", f"On the {len(layers['indices'])} worst-reconstructed inputs of `{layers['set']}`. Bounds "
                         "and measured singular values on a float64 copy (global bounds: the paper's table, `-` "
                         "where none exists; local: rigorous bounds on the box these inputs span); round trip: the "
                         "layer's own `f^-1(f(x))` at its input; inverse pass: the error of the reconstruction of "
                         f"the layer's input when the whole inverse reaches it (both in {m['dtype']}, worst over the "
                         "inputs). Bound violations: "
                         + ("none." if not layers["violations"] else "; ".join(layers["violations"]))))
        conv = layers.get("convergence")
        if conv:
            out.append(("p", f"Iterative inverses: {conv['blocks']} blocks on these inputs, "
                             f"{conv['not_converged']} not converged, at most {conv['max_iterations']} iterations, "
                             f"largest final step {fmt(conv['max_residual'])}."))
        rows = []
        for r in layers["rows"]:
            marks = []
            if r["layer"] == layers["worst_inverse"]:
                marks.append("worst-conditioned inverse")
            if r["layer"] == layers["breaks_at"]:
                marks.append("**reconstruction breaks here**")
            if "inverse_solver" in r:
                it = r["inverse_solver"]
                marks.append(f"{it['iterations']} iterations" + ("" if it["converged"] else ", **not converged**"))
            rows.append([r["layer"], fmt(r["bound_forward"]), fmt(r["local_forward"]), fmt(r["sigma_max"]),
                         fmt(r["bound_inverse"]), fmt(r["local_inverse"]), fmt(r["inverse_lipschitz"]),
                         fmt(r["round_trip"]), fmt(r["inverse_pass_error"]), "; ".join(marks)])
        out.append(("table", ["layer", "Lip(f) bound", "local", "sigma_max", "Lip(f^-1) bound", "local",
                              "1/sigma_min", "round trip", "inverse pass", ""], rows))
    if figure_names:
        out.append(("h2", "Figures"))
        captions = {"errors": "Cumulative distribution of the relative reconstruction error per set.",
                    "layers": "Per layer: inverse Lipschitz constants (measured and bounds); errors in the working "
                              "precision."}
        out += [("figure", name, captions.get(name, name)) for name in figure_names]
    else:
        out.append(("p", "No figures: matplotlib is not installed (`pip install invertible[experiments]`)."))
    t = report["timing"]
    out.append(("h2", "Budget"))
    out.append(("p", f"Measured in {fmt(t['measure_s'])} s (loading {fmt(t['load_s'])} s) with "
                     + ", ".join(f"{k}={v}" for k, v in m["options"].items()) + "."))
    return out


def _inline_html(text: str) -> str:
    text = html.escape(text, quote=False)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def to_markdown(parts: list[Block], figure_paths: dict[str, str]) -> str:
    """Markdown of the blocks; figures link to ``figure_paths[name]``."""
    lines: list[str] = []
    for block in parts:
        kind = block[0]
        if kind in ("h1", "h2"):
            lines += [("# " if kind == "h1" else "## ") + block[1], ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "list":
            lines += [f"- {item}" for item in block[1]] + [""]
        elif kind == "table":
            lines.append("| " + " | ".join(block[1]) + " |")
            lines.append("|" + "---|" * len(block[1]))
            lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in block[2]]
            lines.append("")
        elif kind == "figure":
            lines += [f"![{block[2]}]({figure_paths[block[1]]})", ""]
    return "\n".join(lines)


_STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
          "table{border-collapse:collapse;font-size:0.85em;margin:1em 0}td,th{border:1px solid #ccc;padding:2px 6px;"
          "text-align:right}td:first-child,th:first-child{text-align:left}code{background:#f3f3f3}"
          "img{max-width:100%}figcaption{font-size:0.85em;color:#555}")


def to_html(parts: list[Block], pngs: dict[str, bytes], title: str) -> str:
    """A self-contained HTML page of the blocks (figures embedded as ``data:image/png;base64``)."""
    body: list[str] = []
    for block in parts:
        kind = block[0]
        if kind in ("h1", "h2"):
            body.append(f"<{kind}>{_inline_html(block[1])}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{_inline_html(block[1])}</p>")
        elif kind == "list":
            body.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in block[1]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{_inline_html(h)}</th>" for h in block[1])
            rows = "".join("<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in row) + "</tr>" for row in block[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "figure":
            data = base64.b64encode(pngs[block[1]]).decode("ascii")
            body.append(f'<figure><img alt="{html.escape(block[1])}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{_inline_html(block[2])}</figcaption></figure>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def summary(report: dict[str, Any], out_dir: str | None = None) -> str:
    """A one-screen summary for the terminal."""
    m = report["measurement"]
    lines = [f"{report['model']['name']}: {m['label'].upper()} (rtol {fmt(m['rtol'])}, {m['dtype']})"]
    for r in m["sets"].values():
        k = r.get("kappa", {}).get("worst", {}).get("kappa_forward")
        lines.append(f"  {r['name']:<16} {r['label']:<15} worst {fmt(r['worst']):>9}  non-finite {r['nonfinite']:>4}"
                     f"/{r['n']:<5} kappa@worst {fmt(k)}")
    if "attack" in m:
        a = m["attack"]
        lines.append(f"  {'attack':<16} {a['label']:<15} worst {fmt(a['attacked_worst']):>9}  (radius "
                     f"{fmt(a['radius'])}, {a['steps']} steps, growth {fmt(a['growth_max'])}x)")
    if "gradient_check" in m:
        g = m["gradient_check"]
        verdict = "agree" if g["agreed"] else "DISAGREE"
        lines.append(f"  memory-saving gradients {verdict} (angle {fmt(g['angle'])} rad)")
    if "layers" in m:
        layers = m["layers"]
        lines.append(f"  worst-conditioned inverse: {layers['worst_inverse']} "
                     f"(1/sigma_min {fmt(layers['worst_inverse_value'])})")
        if layers.get("convergence"):
            c = layers["convergence"]
            lines.append(f"  iterative inverses: {c['blocks']} blocks, {c['not_converged']} not converged, "
                         f"<= {c['max_iterations']} iterations")
        if layers["breaks_at"] is not None:
            lines.append(f"  reconstruction breaks at:  {layers['breaks_at']} (inputs {layers['indices']} of "
                         f"{layers['set']})")
    lines.append(f"  measured in {fmt(report['timing']['measure_s'])} s")
    if out_dir is not None:
        lines.append(f"  written: {out_dir}/report.html, report.md, report.json")
    return "\n".join(lines)
