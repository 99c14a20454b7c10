"""A study's verdicts as data: claims, what each run measured for them, and the one table every page opens with.

A :class:`Claim` is one statement of the paper checked against our runs: its text and the paper's figure come
from the page's ``claims.md`` (:func:`load_texts`), the criterion and the runs' measurements from the report
(:class:`Criterion`, :class:`Observation`). Its :attr:`Claim.verdict` follows fixed rules:

- only runs of a full preset count; runs of a ``quick`` preset are small-model demonstrations, shown apart and
  never counted as agreement;
- a claim rests on seeds: it **agrees** when at least :data:`MIN_SEEDS` seeds decided it and every one showed it,
  **does not agree** when as many decided it and none showed it, and is **mixed** otherwise; with fewer seeds it
  says *too few seeds* whatever they showed;
- a run whose measurement cannot decide the criterion (e.g. the invertibility verdict of a run that stored no
  relative errors) is *undetermined* and counts for neither side.

:func:`claims_table` renders claims into the table (claim, paper's figure, ours with seeds, criterion, verdict).

Example:
    >>> texts = {"c": ClaimText("Kappa grows.", "up to a lot", "largest kappa")}
    >>> crit = Criterion.at_least(100)
    >>> obs = [crit.observe(f"r{s}", s, False, v) for s, v in ((0, 300.0), (1, 2e3), (2, 150.0))]
    >>> claim = Claim("c", crit, obs)
    >>> claim.verdict.word, claim.ours()
    ('agrees', '3 of 3 seeds showed it; median 300 (150 to 2000)')
    >>> Claim("c", crit, obs[:2]).verdict.word
    'too few seeds'
    >>> Claim("c", crit, [crit.observe("q", 0, True, 1e3)]).verdict.word
    'small-model demonstration'
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .invertibility import Judgement
from .numbers import fmt, num, spread
from .tables import table

__all__ = ["MIN_SEEDS", "Claim", "ClaimSet", "ClaimText", "Criterion", "Observation", "Verdict", "claims_table",
           "load_texts"]

#: The fewest seeds on which a claim can be called reproduced (or refuted).
MIN_SEEDS = 3


@dataclass(frozen=True)
class Observation:
    """What one run measured for a claim.

    Attributes:
        run: the run folder (relative to the report's root).
        seed: the run's seed.
        demo: a run of a ``quick`` preset (a small-model demonstration).
        value: the measured number shown in the table (None when there is none).
        holds: whether this run showed the claim (None: undetermined).
        note: a few words on this run's outcome (e.g. why it is undetermined); repeated notes are shown once.
    """

    run: str
    seed: int | None
    demo: bool
    value: float | None
    holds: bool | None
    note: str = ""


@dataclass(frozen=True)
class Criterion:
    """How one run shows a claim: a relation on the measured value (``test``), or the library's invertibility
    verdict (:meth:`verdict`), or a decision the report makes from several numbers (:meth:`stated`).
    ``relation`` ends the table's criterion cell (after the claim's ``measure`` text); ``unit`` follows values."""

    relation: str
    test: Callable[[float], bool] | None = None
    unit: str = ""
    label: str | None = None

    @classmethod
    def at_least(cls, threshold: float, unit: str = "") -> Criterion:
        return cls(f">= {fmt(threshold)}{unit}", lambda v: v >= threshold, unit)

    @classmethod
    def above(cls, threshold: float, unit: str = "") -> Criterion:
        return cls(f"> {fmt(threshold)}{unit}", lambda v: v > threshold, unit)

    @classmethod
    def below(cls, threshold: float, unit: str = "") -> Criterion:
        return cls(f"< {fmt(threshold)}{unit}", lambda v: v < threshold, unit)

    @classmethod
    def verdict(cls, label: str) -> Criterion:
        """The run's model is ``label`` (``"invertible"`` or ``"non-invertible"``) by the library's verdict;
        :meth:`judged` makes the observations."""
        from invertible.diagnostics import NONINVERTIBLE_RTOL

        return cls(f"is numerically {label} (the library's verdict, rtol {fmt(NONINVERTIBLE_RTOL)})", None, "",
                   label)

    @classmethod
    def stated(cls) -> Criterion:
        """A decision the report takes from several numbers, described wholly by the claim's ``measure`` text."""
        return cls("", None, "")

    def observe(self, run: str, seed: int | None, demo: bool, value: Any, holds: bool | None = None,
                note: str = "") -> Observation:
        """One run's observation; ``holds`` defaults to the criterion's test of ``value`` (None: undetermined
        when there is no finite-or-infinite value)."""
        x = None if value is None else num(value)
        if holds is None and self.test is not None and x is not None and not math.isnan(x):
            holds = bool(self.test(x))
        return Observation(run, seed, demo, x, holds, note)

    def judged(self, run: str, seed: int | None, demo: bool, judgement: Judgement, value: Any = None,
               note: str = "") -> Observation:
        """An observation decided by the library's verdict: holds when the judgement's label is this
        criterion's; undetermined when the judgement is. The value shown is the worst relative error unless
        ``value`` is given."""
        if self.label is None:
            raise ValueError("Criterion.judged needs a criterion made by Criterion.verdict(label)")
        holds = None if judgement.invertible is None else judgement.label == self.label
        shown = judgement.worst_relative if value is None else value
        extra = judgement.reason if judgement.invertible is None else ""
        return Observation(run, seed, demo, None if shown is None else num(shown), holds,
                           "; ".join(p for p in (note, extra) if p))


@dataclass(frozen=True)
class Verdict:
    """The verdict on a claim: its word, whether it counts as agreement with the paper, and the detail."""

    word: str
    agrees: bool
    detail: str = ""

    def __str__(self) -> str:
        bold = f"**{self.word}**" if self.word in ("agrees", "does not agree") else self.word
        return f"{bold} ({self.detail})" if self.detail else bold


@dataclass(frozen=True)
class ClaimText:
    """The hand-written part of a claim, from the page's ``claims.md``: the paper's statement, the paper's
    figure and what our runs measure for it."""

    claim: str
    paper: str
    measure: str


@dataclass(frozen=True)
class Claim:
    """One claim of the paper, the criterion our runs are held to and their observations; ``where`` names the
    setting when a page checks the same claim in several (shown after the claim's text)."""

    id: str
    criterion: Criterion
    observations: Sequence[Observation] = field(default_factory=tuple)
    where: str = ""

    def _full(self) -> list[Observation]:
        return [o for o in self.observations if not o.demo]

    @property
    def verdict(self) -> Verdict:
        full, demos = self._full(), [o for o in self.observations if o.demo]
        if not self.observations:
            return Verdict("not run", False, "no finished run")
        if not full:
            decided = [o for o in demos if o.holds is not None]
            shown = sum(o.holds is True for o in decided)
            what = f"{shown} of {len(decided)} showed it" if decided else "undetermined"
            return Verdict("small-model demonstration", False, f"quick preset only, {what}; not counted")
        decided = [o for o in full if o.holds is not None]
        shown = sum(o.holds is True for o in decided)
        if not decided:
            return Verdict("undetermined", False, "no run could decide it")
        if len(decided) < MIN_SEEDS:
            return Verdict("too few seeds", False, f"{shown} of {len(decided)} showed it; {MIN_SEEDS} needed")
        if shown == len(decided):
            return Verdict("agrees", True)
        if shown == 0:
            return Verdict("does not agree", False)
        return Verdict("mixed", False, f"{shown} of {len(decided)} seeds showed it")

    def ours(self) -> str:
        """The table's cell for our measurement: how many seeds showed it, median and range (full presets),
        then the small-model demonstrations, then the notes."""
        parts = []
        for label, group in (("", self._full()), ("quick preset (small-model demonstration): ",
                                                  [o for o in self.observations if o.demo])):
            if group:
                parts.append(label + _summary(group, self.criterion.unit))
        notes = list(dict.fromkeys(o.note for o in self.observations if o.note))
        return "; ".join(parts + notes) or "not run"


def _summary(group: Sequence[Observation], unit: str) -> str:
    decided = [o for o in group if o.holds is not None]
    seeds = "seed" if len(decided) == 1 else "seeds"
    undetermined = len(group) - len(decided)
    if decided:
        text = f"{sum(o.holds is True for o in decided)} of {len(decided)} {seeds} showed it"
        text += f", {undetermined} undetermined" if undetermined else ""
    else:
        text = f"undetermined in {undetermined} seed{'s' if undetermined > 1 else ''}"
    values = [o.value for o in group if o.value is not None]
    stats = spread(values)
    if stats is not None:
        median, low, high = stats
        text += (f"; {fmt(median)}{unit}" if len(values) == 1 else
                 f"; median {fmt(median)}{unit} ({fmt(low)} to {fmt(high)}{unit})")
    return text


class ClaimSet:
    """The claims of one page section, gathered run by run: ``criteria`` maps each claim id to its criterion;
    :meth:`observe` and :meth:`judged` add one run's observation (the run gives the seed and whether it is a
    demonstration); :meth:`claims` returns every claim, in the order of ``criteria``, also those no run observed.

    >>> found = ClaimSet({"c": Criterion.at_least(100)}, where="cpu")
    >>> class Run: name, seed, demo = "r", 0, False
    >>> found.observe("c", Run, 300.0)
    >>> [(c.id, c.where, len(c.observations)) for c in found.claims()]
    [('c', 'cpu', 1)]
    """

    def __init__(self, criteria: Mapping[str, Criterion], where: str = "") -> None:
        self.criteria, self.where = dict(criteria), where
        self._found: dict[str, list[Observation]] = {k: [] for k in criteria}

    def observe(self, claim: str, run: Any, value: Any, holds: bool | None = None, note: str = "") -> None:
        self._found[claim].append(self.criteria[claim].observe(run.name, run.seed, run.demo, value, holds, note))

    def judged(self, claim: str, run: Any, judgement: Judgement, value: Any = None, note: str = "") -> None:
        self._found[claim].append(self.criteria[claim].judged(run.name, run.seed, run.demo, judgement, value, note))

    def claims(self) -> list[Claim]:
        return [Claim(k, self.criteria[k], tuple(v), self.where) for k, v in self._found.items()]


_HEADING = re.compile(r"^##\s+(\S+)\s*$")
_FIELD = re.compile(r"^(claim|paper|measure):\s*(.*)$")


def load_texts(path: Path) -> dict[str, ClaimText]:
    """Read a page's ``claims.md``: ``## <id>`` headings, each followed by ``claim:``, ``paper:`` and ``measure:``
    lines (a field continues on the following non-blank lines). Raises ``ValueError`` naming the file and the claim
    when a field is missing or unknown."""
    texts: dict[str, dict[str, str]] = {}
    current: str | None = None
    key: str | None = None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        heading, found = _HEADING.match(line), _FIELD.match(line)
        if heading:
            current, key = heading.group(1), None
            if current in texts:
                raise ValueError(f"{path}:{number}: claim {current!r} is defined twice")
            texts[current] = {}
        elif current is not None and found:
            key = found.group(1)
            texts[current][key] = found.group(2).strip()
        elif current is not None and line.strip() and key is not None:
            texts[current][key] += " " + line.strip()
        elif line.strip() and current is not None:
            raise ValueError(f"{path}:{number}: expected 'claim:', 'paper:' or 'measure:' under ## {current}")
        elif not line.strip():
            key = None
    out = {}
    for name, fields in texts.items():
        missing = [k for k in ("claim", "paper", "measure") if not fields.get(k)]
        if missing:
            raise ValueError(f"{path}: claim {name!r} lacks {', '.join(missing)}")
        out[name] = ClaimText(**fields)
    return out


def claims_table(claims: Sequence[Claim], texts: Mapping[str, ClaimText]) -> str:
    """The table a page opens with: one row per claim (claim, paper's figure, ours with seeds, criterion,
    verdict). Every claim needs its text in ``texts``; ``ValueError`` names the ones that lack it."""
    missing = [c.id for c in claims if c.id not in texts]
    if missing:
        raise ValueError(f"claims without a text in claims.md: {', '.join(missing)}")
    rows = []
    for c in claims:
        text = texts[c.id]
        criterion = f"{text.measure} {c.criterion.relation}".strip()
        claim = f"{text.claim} *({c.where})*" if c.where else text.claim
        rows.append([claim, text.paper, c.ours(), criterion, str(c.verdict)])
    return table(["claim", "paper", "ours (seeds)", "criterion", "verdict"], rows)
