"""Numbers on a results page: one reader for the values runs store, one way to write them.

Runs store numbers in JSON (``metrics.json``: non-finite floats as the strings ``"Infinity"``, ``"-Infinity"``,
``"NaN"``) and CSV (cells such as ``inf``, ``nan`` or empty). :func:`num` reads any of them; :func:`fmt` writes
every number of every page: plain with three significant digits from ``1e-2`` up to ``1e4`` (whole numbers from
``1000`` on in full), scientific with two outside that range, non-finite values spelled ``inf``/``-inf``/``NaN``, a
missing value as ``-``.

Example:
    >>> [fmt(v) for v in (0.1234, 12.5, 1024, 1438.6, 12345.0, 3.5e6, 1e-3, 1.2e-7, "Infinity", None, 0)]
    ['0.123', '12.5', '1024', '1439', '1.2e4', '3.5e6', '1e-3', '1.2e-7', 'inf', '-', '0']
    >>> percent(0.25), minutes(90)
    ('25 %', '1.5 min')
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

__all__ = ["fmt", "minutes", "num", "percent", "spread"]

#: JSON's spellings of the non-finite floats (``to_jsonable`` of the run folders).
_SPECIAL = {"Infinity": math.inf, "-Infinity": -math.inf, "NaN": math.nan}


def num(value: Any) -> float:
    """A stored value as a float: numbers as they are, ``"Infinity"``/``"inf"``/``"NaN"`` as the non-finite floats,
    ``None``, ``""``, booleans and unreadable text as NaN."""
    if value is None or isinstance(value, bool) or value == "":
        return math.nan
    if isinstance(value, str):
        if value in _SPECIAL:
            return _SPECIAL[value]
        try:
            return float(value)
        except ValueError:
            return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _compact(text: str) -> str:
    return text.replace(".0e", "e").replace("e+0", "e").replace("e-0", "e-").replace("e+", "e")


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a page: ``digits`` significant digits from ``1e-2`` up to ``1e4`` (a whole number of more
    digits in full), else scientific with ``digits - 1``; ``inf``, ``-inf``, ``NaN``; ``-`` for a missing value."""
    if value is None or value == "":
        return "-"
    x = num(value)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0"
    if abs(x) >= 1e4 or abs(x) < 1e-2:
        return _compact(f"{x:.{max(digits - 2, 1)}e}")
    if abs(x) >= 10 ** digits:
        return f"{x:.0f}"
    return _compact(f"{x:.{digits}g}")


def percent(share: Any) -> str:
    """A share in ``[0, 1]`` as a percentage (``fmt``'s digits): ``0.25`` -> ``"25 %"``."""
    x = num(share)
    return "-" if math.isnan(x) else f"{fmt(100 * x)} %"


def minutes(seconds: Any) -> str:
    """Seconds as minutes with one decimal: ``90`` -> ``"1.5 min"``."""
    x = num(seconds)
    return "-" if math.isnan(x) else f"{x / 60:.1f} min"


def spread(values: Iterable[Any]) -> tuple[float, float, float] | None:
    """Median, smallest and largest of the values (NaN left out; a NaN median if there are none), or ``None``
    for an empty input.

    >>> spread([3.0, 1.0, 2.0, "NaN"])
    (2.0, 1.0, 3.0)
    """
    xs = [num(v) for v in values]
    if not xs:
        return None
    xs = sorted(x for x in xs if not math.isnan(x))
    if not xs:
        return (math.nan, math.nan, math.nan)
    middle = len(xs) // 2
    median = xs[middle] if len(xs) % 2 else (xs[middle - 1] + xs[middle]) / 2
    return median, xs[0], xs[-1]
