"""Run the contract suite over the peers' catalogues and write the findings as markdown.

Each entry of :mod:`invertible.verify.catalog` is built (seeded, float64), copied into each dtype, and checked by
:func:`~invertible.testing.check_invertible` with its default, calibrated tolerances; nothing is loosened per
layer. A failure is then looked up in :mod:`invertible.verify.findings` (its class and a reproduction that
measures the cause without our checker); what no finding covers is listed as unclassified.
"""

from __future__ import annotations

import copy
import time
import warnings
from dataclasses import dataclass, field

import torch

from ..testing import check_invertible
from .catalog import ENTRIES, LIBRARIES, Entry, library_version
from .findings import FINDINGS, KINDS, Finding, classify

__all__ = ["Result", "markdown", "verify"]

DTYPES = {"float64": torch.float64, "float32": torch.float32}


@dataclass
class Result:
    """One entry in one dtype: ``status`` is ``"pass"``, ``"fail"`` (``failures``) or ``"error"`` (the build or
    the cast raised: ``failures`` holds the error)."""

    entry: Entry
    dtype: str
    status: str
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def finding(self) -> Finding | None:
        return None if self.status == "pass" else classify(self.entry.key, self.dtype)


def _check(entry: Entry, dtype: str) -> Result:
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the peers' deprecation warnings; the checks record their own
        try:
            module, x, context = entry.build()
            if dtype != "float64":
                module = copy.deepcopy(module).to(DTYPES[dtype])
                x = x.to(DTYPES[dtype])
                context = None if context is None else context.to(DTYPES[dtype])
        except Exception as err:
            return Result(entry, dtype, "error", [f"build: {type(err).__name__}: {str(err).splitlines()[0]}"],
                          seconds=time.perf_counter() - start)
        report = check_invertible(module, x, context=context, name=entry.key, raise_on_failure=False)
    return Result(entry, dtype, "pass" if report.ok else "fail", list(report.failures), list(report.notes),
                  time.perf_counter() - start)


def verify(libraries: tuple[str, ...] | None = None, dtypes: tuple[str, ...] = ("float64", "float32"),
           only: str | None = None) -> tuple[list[Result], dict[str, str | None]]:
    """Check every entry of the installed libraries (``only``: entries whose key contains it) in each dtype.

    Returns the results and the version of each library (``None``: not installed, its entries skipped).
    """
    versions = {lib: library_version(lib) for lib in (libraries or tuple(LIBRARIES))}
    results = []
    for entry in ENTRIES:
        if versions.get(entry.library) is None or (only is not None and only not in entry.key):
            continue
        for dtype in dtypes:
            results.append(_check(entry, dtype))
    return results, versions


def adapter_lines() -> dict[str, int]:
    """Lines of code of each adapter class (docstrings, comments and blank lines not counted).

    Example:
        >>> adapter_lines()["Zuko"] < 15
        True
    """
    import ast
    import inspect

    from .. import adapters

    counts = {}
    for name in ("FrEIA", "NFlows", "NormFlows", "Zuko", "Callables"):
        source = inspect.getsource(getattr(adapters, name))
        tree = ast.parse(source)
        doc_lines: set[int] = set()
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(
                    getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value, str):
                doc_lines.update(range(body[0].lineno, body[0].end_lineno + 1))
        counts[name] = sum(1 for i, line in enumerate(source.splitlines(), 1)
                           if line.strip() and not line.strip().startswith("#") and i not in doc_lines)
    return counts


FOREIGN = [
    "the input's dtype is compared with the floating-point parameters only (an int64 permutation held as a frozen "
    "`nn.Parameter`, FrEIA's `PermuteRandom`, was refused with the advice `layer.to(x.dtype)`, also inside "
    "`Sequential`)",
    "the state-dict check changes only trainable floating-point parameters, through `.data`, and says so (it "
    "changed frozen matrices and then blamed a stale cached inverse)",
    "module calls run with autograd on where the forward cannot run under `no_grad` (FrEIA's i-ResNet calls "
    "`torch.autograd.grad` itself); Jacobians come from plain autograd where torch.func cannot trace the map "
    "(`requires_grad_`, in-place updates), checked against finite differences, and a `no_grad` region inside the "
    "map is a named failure (all three crashed the checker with torch's own errors)",
    "any exception inside a module call is a failure of the property being checked, naming it; a caller's tensor "
    "changed in place is the failure `inputs`",
    "stochastic log-dets (`logdet_kind == \"estimated\"`) are checked statistically (mean of 200 draws against the "
    "exact value within a computed confidence interval); they failed the exact comparison",
    "an iterative inverse is allowed its declared `inverse_atol` in every property (round trips, log-dets, batch "
    "independence, state dicts), not the round trips only, and a `ConvergenceError`, `ConvergenceWarning` or "
    "`converged=False` report is the failure `convergence`",
    "a one-element log-det (FrEIA's blocks whose log-det does not depend on the input) is broadcast per sample by "
    "the adapter; `context=` reaches every call in both directions, sliced with the batch",
]


def _cell(result: Result | None) -> str:
    if result is None:
        return "-"
    if result.status == "pass":
        return "pass"
    props = sorted({f.split(":", 1)[0] for f in result.failures})
    return f"**{result.status}**: " + ", ".join(props)


def _reproductions(findings: list[Finding]) -> dict[int, str]:
    out = {}
    for f in findings:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                out[id(f)] = f.reproduce()
            except Exception as err:  # reported in the page, never hidden
                out[id(f)] = f"the reproduction raised {type(err).__name__}: {err}"
    return out


def markdown(results: list[Result], versions: dict[str, str | None], command: str) -> str:
    """The page ``docs/results/peers.md``: summary, per-layer table, failures with magnitudes, findings."""
    dtypes = list(dict.fromkeys(r.dtype for r in results))
    by_key: dict[str, dict[str, Result]] = {}
    for r in results:
        by_key.setdefault(r.entry.key, {})[r.dtype] = r
    lines = ["# Peer layers under the contract suite", "",
             f"Written by `{command}` (torch {torch.__version__}; "
             + ", ".join(f"{lib} {v or 'not installed'}" for lib, v in versions.items())
             + "). Every layer is built as a user of its library would (seeded; see "
             "`src/invertible/verify/catalog*.py`), wrapped by `invertible.adapters`, and checked by "
             "`check_invertible` with its default calibrated tolerances in each dtype (float32: a copy of the "
             "float64 layer cast with `.to(torch.float32)`). Each failure is classified in "
             "`src/invertible/verify/findings.py` with a reproduction that measures the cause directly, "
             "without our checker; its source and output are below.", "",
             "Classes: " + "; ".join(f"**{k}**: {v}" for k, v in KINDS.items()) + ".", "",
             "Adapters (`src/invertible/adapters/`; lines of code of each class, docstrings and comments not "
             "counted, on top of the shared `Adapter` base): "
             + ", ".join(f"{k} {v}" for k, v in adapter_lines().items()) + ". What the checker now does for "
             "foreign modules that it did not:", "", *[f"- {f};" for f in FOREIGN], "", "## Summary", "",
             "| library | layers | " + " | ".join(f"{d} pass / fail" for d in dtypes)
             + " | " + " | ".join(KINDS) + " |",
             "|---|---|" + "---|" * (len(dtypes) + len(KINDS))]
    for lib in versions:
        keys = [k for k in by_key if k.split(".", 1)[0] == lib]
        if not keys:
            lines.append(f"| {lib} | not installed |" + " |" * (len(dtypes) + len(KINDS)))
            continue
        counts = []
        for d in dtypes:
            rs = [by_key[k][d] for k in keys if d in by_key[k]]
            counts.append(f"{sum(r.status == 'pass' for r in rs)} / {sum(r.status != 'pass' for r in rs)}")
        kinds = {k: {r.entry.key for k2 in keys for r in by_key[k2].values() if r.finding and r.finding.kind == k}
                 for k in KINDS}
        lines.append(f"| {lib} | {len(keys)} | " + " | ".join(counts) + " | "
                     + " | ".join(str(len(kinds[k])) for k in KINDS) + " |")
    unclassified = [r for r in results if r.status != "pass" and r.finding is None]
    lines += ["", f"Unclassified failures: {len(unclassified)}.", "", "## Per layer", "",
              "| layer | " + " | ".join(dtypes) + " | class | seconds |", "|---|" + "---|" * (len(dtypes) + 2)]
    for key, per in by_key.items():
        kinds = sorted({r.finding.kind for r in per.values() if r.finding} | (
            {"**unclassified**"} if any(r.status != "pass" and r.finding is None for r in per.values()) else set()))
        secs = sum(r.seconds for r in per.values())
        lines.append(f"| {key} | " + " | ".join(_cell(per.get(d)) for d in dtypes) + f" | {', '.join(kinds)} | "
                     f"{secs:.1f} |")
    lines += ["", "## Failures, with their magnitudes", ""]
    for r in results:
        if r.status == "pass":
            continue
        lines.append(f"- **{r.entry.key}** ({r.dtype}, {r.finding.kind if r.finding else 'unclassified'}):")
        lines += [f"  - {f}" for f in r.failures]
    used = [f for f in FINDINGS if any(r.finding is f for r in results)]
    shown = _reproductions(used)
    lines += ["", "## Findings and their reproductions", ""]
    for f in used:
        lines += [f"### {f.key} ({', '.join(f.dtypes)}): {KINDS[f.kind]}", "", f.summary + ".", "",
                  "```python", f.source.rstrip(), "```", "", f"Output: {shown[id(f)]}", ""]
    return "\n".join(lines).rstrip() + "\n"
