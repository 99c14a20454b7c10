"""Tables and verdicts of the stability analysis that the Glow-like studies (``glow``, ``flowgan``) store in
``analysis.csv``: one row per model, snapshot (step) and probe set (data, samples, noise, an OOD set)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .invertibility import Judgement, combine, judge, relative_of
from .numbers import fmt, num, percent
from .tables import table

__all__ = ["LAST_COLUMNS", "OFF_DATA", "SETS", "last", "last_snapshot_table", "over_training_table", "set_verdict",
           "snapshots", "verdict_off_data"]

#: The probe sets, in table order.
SETS = ("data", "samples", "gaussian", "rademacher", "ood")
#: The probe sets off the data (noise and the OOD set).
OFF_DATA = ("gaussian", "rademacher", "ood")
#: The last-snapshot table: (column of analysis.csv, header, shown as a percentage).
LAST_COLUMNS = [("input_nonfinite", "non-finite inputs", True), ("bpd", "bpd", False),
                ("cond_max", "max kappa", False), ("logdet_error_max", "log-det error", False),
                ("mse_1_max", "max MSE, 1 trip", False), ("mse_9_max", "max MSE, 9 trips", False),
                ("recon_nonfinite_1", "non-finite recon, 1 trip", True)]

Row = Mapping[str, str]


def snapshots(rows: Sequence[Row], model: str) -> dict[int, dict[str, Row]]:
    """step -> probe set -> row, for one model."""
    out: dict[int, dict[str, Row]] = {}
    for r in rows:
        if r["model"] == model:
            out.setdefault(int(num(r["step"])), {})[r["set"]] = r
    return dict(sorted(out.items()))


def last(rows: Sequence[Row], model: str) -> dict[str, Row]:
    """The last snapshot's rows of one model, by probe set (empty when the model has none)."""
    snaps = snapshots(rows, model)
    return snaps[max(snaps)] if snaps else {}


def set_verdict(row: Row) -> Judgement:
    """The library's verdict on one probe set at one snapshot: one round trip ``f^-1(f(x))`` of each input."""
    return judge(relative_of(row), nonfinite_share=row.get("recon_nonfinite_1", 0), n=row.get("n"),
                 missing="relative errors (an analysis made before relative_max_1 was stored)")


def verdict_off_data(rows_by_set: Mapping[str, Row], sets: Sequence[str] = OFF_DATA) -> Judgement:
    """The verdict over the union of some probe sets of one snapshot."""
    parts = [set_verdict(rows_by_set[s]) for s in sets if s in rows_by_set]
    return combine(parts) if parts else judge(None, 0, None, missing="probe sets")


def last_snapshot_table(rows: Sequence[Row], models: Sequence[str]) -> str:
    """Each model's last snapshot, one row per probe set, with the library's verdict."""
    out = []
    for model in models:
        mine = last(rows, model)
        for name in (s for s in SETS if s in mine):
            r = mine[name]
            out.append([model, str(int(num(r["step"]))), name,
                        *[percent(r.get(c)) if pct else fmt(r.get(c)) for c, _, pct in LAST_COLUMNS],
                        set_verdict(r).label])
    return table(["model", "step", "probe set", *[h for _, h, _ in LAST_COLUMNS], "verdict"], out)


def over_training_table(rows: Sequence[Row], column: str, models: Sequence[str]) -> str:
    """One row per model and snapshot: ``column`` of each probe set."""
    out = []
    for model in models:
        for step, by_set in snapshots(rows, model).items():
            out.append([model, str(step), *[fmt(by_set[s].get(column)) if s in by_set else "-" for s in SETS]])
    return table(["model", "step", *SETS], out)
