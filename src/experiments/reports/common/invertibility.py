"""The word *numerically non-invertible* on every page, from the library's one definition.

:func:`invertible.diagnostics.judge_reconstructions` decides: a flow is numerically non-invertible on a set when a
reconstruction of one of its inputs is non-finite or off by more than ``rtol`` (``NONINVERTIBLE_RTOL``) relative to
the input. A page never decides by itself and never from a condition number (kappa is a precursor, shown beside
the verdict). What a study stored decides which of three ways applies:

- the verdict itself (``InvertibilityVerdict.to_dict()`` under one of :data:`VERDICT_KEYS`): :func:`stored` reads
  it and checks it against the definition;
- per-input errors (an array of relative errors and non-finite flags): :func:`judge_errors` passes them on;
- summary numbers (the worst relative error over the set and the number of non-finite reconstructions):
  :func:`judge` decides from them exactly as from per-input errors (the verdict depends only on those two).

Where a study stored no relative error and nothing non-finite, the verdict is ``undetermined``, and says so.

Example:
    >>> judge(worst_relative=0.3, nonfinite=0, n=100).label
    'non-invertible'
    >>> judge(worst_relative=2e-7, nonfinite=0, n=100).label
    'invertible'
    >>> judge(worst_relative=None, nonfinite=4, n=128).label   # non-finite decides without a relative error
    'non-invertible'
    >>> j = judge(worst_relative=None, nonfinite=0, n=128, missing="relative errors")
    >>> j.label, j.reason
    ('undetermined', 'the run stored no relative errors (nothing non-finite among 128 inputs)')
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from invertible.diagnostics import NONINVERTIBLE_RTOL, judge_reconstructions

from .numbers import fmt, num, percent

__all__ = [
    "INVERTIBLE",
    "NON_INVERTIBLE",
    "RELATIVE_KEYS",
    "UNDETERMINED",
    "VERDICT_KEYS",
    "Judgement",
    "combine",
    "find_stored",
    "judge",
    "judge_errors",
    "relative_of",
    "stored",
]

INVERTIBLE, NON_INVERTIBLE, UNDETERMINED = "invertible", "non-invertible", "undetermined"
#: Keys under which a study may store ``InvertibilityVerdict.to_dict()`` (read in this order).
VERDICT_KEYS = ("verdict", "invertibility", "invertibility_verdict")
#: Flat keys (e.g. CSV columns) under which a study may store the worst relative reconstruction error of a set.
RELATIVE_KEYS = ("worst_relative", "relative_max", "recon_relative_max", "relative_max_1")
_SHAPE = {"invertible", "nonfinite", "worst_relative", "rtol", "n"}


@dataclass(frozen=True)
class Judgement:
    """The library's verdict on one model and one set of inputs, as a page shows it.

    Attributes:
        label: ``"invertible"``, ``"non-invertible"`` or ``"undetermined"`` (the run did not store what the
            verdict needs).
        reason: one sentence: what decided.
        worst_relative: the largest relative reconstruction error (inf when one is non-finite; None if unknown).
        nonfinite: how many reconstructions are non-finite.
        n: how many inputs were reconstructed (None if unknown).
        rtol: the threshold.
        kappa_at_worst: the condition number at the worst-reconstructed input, if stored (a precursor only).
    """

    label: str
    reason: str
    worst_relative: float | None
    nonfinite: int
    n: int | None
    rtol: float = NONINVERTIBLE_RTOL
    kappa_at_worst: float | None = None

    @property
    def invertible(self) -> bool | None:
        """True, False, or None when undetermined."""
        return None if self.label == UNDETERMINED else self.label == INVERTIBLE

    def __str__(self) -> str:
        return f"{self.label} ({self.reason})"


def _of(n: int | None) -> str:
    return f" among {n} inputs" if n is not None else ""


def judge(worst_relative: Any = None, nonfinite: Any = 0, n: Any = None, *, rtol: float = NONINVERTIBLE_RTOL,
          kappa_at_worst: Any = None, missing: str = "relative errors", nonfinite_share: Any = None) -> Judgement:
    """The verdict from a set's worst relative reconstruction error and its number of non-finite reconstructions
    (``None`` for a relative error the run did not store; ``missing`` names it in the reason). A run that stored
    the non-finite *share* of its inputs gives ``nonfinite_share`` instead of ``nonfinite``.

    >>> judge(1e-7, nonfinite_share=0.25).reason
    'non-finite reconstructions of 25 % of the inputs'
    """
    share = None if nonfinite_share is None else num(nonfinite_share)
    if share is not None and not math.isnan(share):
        nonfinite = int(share > 0)  # at least one; the count is not known
    bad = 0 if math.isnan(num(nonfinite)) else int(num(nonfinite))
    count = None if n is None or math.isnan(num(n)) else int(num(n))
    worst = None if worst_relative is None or worst_relative == "" else num(worst_relative)
    kappa = None if kappa_at_worst is None else num(kappa_at_worst)
    if worst is None and bad == 0:
        return Judgement(UNDETERMINED, f"the run stored no {missing} (nothing non-finite{_of(count)})", None, 0,
                         count, rtol, kappa)
    verdict = judge_reconstructions(torch.tensor([math.nan if worst is None else worst], dtype=torch.float64),
                                    torch.tensor([bad]), rtol=rtol)
    bad = max(bad, verdict.nonfinite)  # a non-finite relative error is a non-finite reconstruction
    worst_shown = math.inf if bad else worst
    if bad and share:
        reason = f"non-finite reconstructions of {percent(share)} of the inputs"
    elif bad:
        reason = f"{bad} non-finite reconstruction{'s' if bad > 1 else ''}{_of(count)}"
    elif verdict.invertible:
        reason = f"worst relative error {fmt(worst)} <= {fmt(rtol)}{_of(count)}"
    else:
        reason = f"worst relative error {fmt(worst)} > {fmt(rtol)}{_of(count)}"
    return Judgement(verdict.label, reason, worst_shown, bad, count, rtol, kappa)


def judge_errors(relative: Sequence[float] | np.ndarray, nonfinite: Sequence[Any] | np.ndarray | None = None, *,
                 rtol: float = NONINVERTIBLE_RTOL) -> Judgement:
    """The verdict from per-input relative errors stored by a run (non-finite entries count as non-finite
    reconstructions; ``nonfinite`` may flag more)."""
    rel = torch.as_tensor(np.asarray(relative, dtype=np.float64)).reshape(-1)
    flags = (torch.zeros_like(rel, dtype=torch.long) if nonfinite is None
             else torch.as_tensor(np.asarray(nonfinite, dtype=np.float64)).reshape(-1).long())
    verdict = judge_reconstructions(rel, flags, rtol=rtol)
    bad = verdict.nonfinite
    return judge(verdict.worst_relative if not bad else math.inf, bad, verdict.n, rtol=rtol)


def stored(record: Mapping[str, Any] | None) -> Judgement | None:
    """A verdict a study stored (``InvertibilityVerdict.to_dict()``), re-decided from its numbers by the library
    (a stored ``invertible`` that contradicts them raises ``ValueError``); ``None`` if ``record`` is not one."""
    if not isinstance(record, Mapping) or not _SHAPE <= set(record):
        return None
    at_worst = record.get("at_worst") or {}
    kappas = at_worst.get("kappa_forward") or [None]
    out = judge(record["worst_relative"], record["nonfinite"], record["n"], rtol=num(record["rtol"]),
                kappa_at_worst=kappas[0])
    if bool(record["invertible"]) != (out.label == INVERTIBLE):
        raise ValueError(f"a stored verdict says invertible={record['invertible']} but its numbers say "
                         f"{out.label} ({out.reason}): the run folder is inconsistent")
    return out


def find_stored(metrics: Mapping[str, Any] | None) -> Judgement | None:
    """The verdict stored under one of :data:`VERDICT_KEYS` of ``metrics`` (``None`` if there is none)."""
    if not isinstance(metrics, Mapping):
        return None
    for key in VERDICT_KEYS:
        found = stored(metrics.get(key))
        if found is not None:
            return found
    return None


def relative_of(record: Mapping[str, Any]) -> Any:
    """The worst relative error a record stores under one of :data:`RELATIVE_KEYS` (``None`` if none: an empty
    CSV cell counts as none)."""
    for key in RELATIVE_KEYS:
        if record.get(key) not in (None, ""):
            return record[key]
    return None


def combine(parts: Sequence[Judgement]) -> Judgement:
    """One verdict over the union of several sets (e.g. training and test images): non-invertible if any part
    is, undetermined if no part is non-invertible and one is undetermined, else invertible.

    >>> combine([judge(1e-6, 0, 10), judge(None, 2, 5)]).reason
    '2 non-finite reconstructions among 15 inputs'
    """
    if not parts:
        raise ValueError("combine: no verdicts to combine")
    n = None if any(p.n is None for p in parts) else sum(p.n for p in parts)  # type: ignore[misc]
    bad = sum(p.nonfinite for p in parts)
    known = [p.worst_relative for p in parts if p.worst_relative is not None]
    kappas = [p.kappa_at_worst for p in parts if p.kappa_at_worst is not None]
    if any(p.label == UNDETERMINED for p in parts) and not any(p.label == NON_INVERTIBLE for p in parts):
        first = next(p for p in parts if p.label == UNDETERMINED)
        return Judgement(UNDETERMINED, first.reason, None, bad, n, parts[0].rtol)
    worst = max(known) if known else None
    return judge(worst, bad, n, rtol=parts[0].rtol, kappa_at_worst=max(kappas) if kappas else None)
