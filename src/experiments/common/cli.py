"""Command-line pieces shared by every study: validated argument types and the common argument groups.

Every numeric flag of every study uses one of the types below, so a bad value (``--lr -1``, ``--coeff 1.5``,
``--fd-coeff nan``, ``--epochs 0``) is a usage error (exit status 2) that names the flag and the allowed range,
before anything is loaded or written. ``tests/experiments/test_studies.py`` checks that no study declares a numeric
flag with a plain ``int`` or ``float``.

Example::

    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="demo")
    >>> _ = parser.add_argument("--lr", type=positive_float, default=1e-3)
    >>> _ = parser.add_argument("--coeff", type=Range(0, 1, low_open=True, high_open=True), default=0.8)
    >>> parser.parse_args(["--lr", "0.5", "--coeff", "0.9"])
    Namespace(lr=0.5, coeff=0.9)
    >>> positive_float("nan")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be a finite number > 0, got 'nan'
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from .data.sources import DEFAULT_DATA_DIR, dataset_names

__all__ = ["NUMERIC_TYPES", "Range", "add_common_args", "add_data_args", "add_run_args", "add_training_args",
           "apply_preset", "finite_float", "non_negative_float", "non_negative_int", "positive_float", "positive_int",
           "seed_int"]

#: Largest seed + 1: numpy's legacy generators (the toy regression's data) take seeds below 2^32.
SEED_LIMIT = 2**32


class Range:
    """An argparse type for numbers in an interval: ``Range(0, 1, low_open=True)`` accepts ``0 < x <= 1``.

    Non-finite values are always refused; ``integer=True`` asks for a whole number. ``None`` as a bound means
    unbounded on that side.
    """

    def __init__(self, low: float | None = None, high: float | None = None, *, low_open: bool = False,
                 high_open: bool = False, integer: bool = False) -> None:
        self.low, self.high, self.low_open, self.high_open, self.integer = low, high, low_open, high_open, integer
        self.__name__ = self.describe()  # argparse names the type in some messages

    def describe(self) -> str:
        """The allowed values in words, e.g. ``a finite number in (0, 1)``."""
        kind = "an integer" if self.integer else "a finite number"
        low, high = _number(self.low), _number(self.high)
        if self.low is not None and self.high is not None:
            return f"{kind} in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{kind} {'>' if self.low_open else '>='} {low}"
        if self.high is not None:
            return f"{kind} {'<' if self.high_open else '<='} {high}"
        return kind

    def __call__(self, text: str) -> float | int:
        try:
            value: float | int = int(text) if self.integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text!r}") from None
        ok = math.isfinite(value)
        if ok and self.low is not None:
            ok = value > self.low if self.low_open else value >= self.low
        if ok and self.high is not None:
            ok = value < self.high if self.high_open else value <= self.high
        if not ok:
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text!r}")
        return value

    def __repr__(self) -> str:
        return f"Range({self.describe()})"


def _number(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


positive_int = Range(1, integer=True)
"""An integer >= 1 (counts of steps, epochs, images, widths)."""
non_negative_int = Range(0, integer=True)
"""An integer >= 0 (intervals where 0 means "never", counts that may be empty)."""
seed_int = Range(0, SEED_LIMIT, high_open=True, integer=True)
"""A seed: an integer in [0, 2^32)."""
positive_float = Range(0, low_open=True)
"""A finite number > 0 (learning rates, radii, step sizes)."""
non_negative_float = Range(0)
"""A finite number >= 0 (weights of loss terms, weight decay, eps)."""
finite_float = Range()
"""Any finite number (shifts; weights where <= 0 means "off")."""

#: The types a numeric flag may use (besides a :class:`Range` of its own).
NUMERIC_TYPES = (positive_int, non_negative_int, seed_int, positive_float, non_negative_float, finite_float)


def add_data_args(parser: argparse.ArgumentParser, *, default_dataset: str = "digits",
                  datasets: Sequence[str] | None = None) -> None:
    """Add ``--dataset``, ``--data-dir`` and ``--download``."""
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", default=default_dataset, choices=list(datasets or dataset_names()),
                       help="Data set to train and evaluate on (default: %(default)s).")
    group.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                       help="Folder searched for data set files and used for downloads (default: %(default)s).")
    group.add_argument("--download", action="store_true",
                       help="Download a data set that is not found locally (needs internet access).")


def add_run_args(parser: argparse.ArgumentParser, *, default_out: str | None = None,
                 auto_out: str | None = None) -> None:
    """Add ``--device``, ``--out``, ``--resume`` and ``--overwrite``.

    ``--out`` is required unless ``default_out`` is given, or ``auto_out`` describes how the study names the folder
    itself when ``--out`` is left out (``args.out`` is then ``None``).
    """
    group = parser.add_argument_group("run")
    group.add_argument("--device", default="auto",
                       help="Device to run on: auto (CUDA if available), cpu, cuda or cuda:N (default: %(default)s).")
    where = f" (default: {auto_out})" if auto_out is not None and default_out is None else ""
    group.add_argument("--out", type=Path, default=default_out, required=default_out is None and auto_out is None,
                       help=f"Run folder for config, logs, metrics, plots and checkpoints{where}.")
    mode = group.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true",
                      help="Continue the run in --out from its last checkpoint (its arguments must match).")
    mode.add_argument("--overwrite", action="store_true",
                      help="Delete an existing run in --out and start afresh.")


def add_training_args(parser: argparse.ArgumentParser, *, epochs: int = 10, batch_size: int = 64,
                      seed: int = 0) -> None:
    """Add ``--seed``, ``--epochs`` and ``--batch-size``."""
    group = parser.add_argument_group("training")
    group.add_argument("--seed", type=seed_int, default=seed,
                       help="Seed of every random number generator; equal seeds give equal runs (default: "
                            "%(default)s).")
    group.add_argument("--epochs", type=positive_int, default=epochs,
                       help="Number of passes over the training set (default: %(default)s).")
    group.add_argument("--batch-size", type=positive_int, default=batch_size,
                       help="Number of examples per optimisation step, over all processes (default: %(default)s).")


def add_common_args(parser: argparse.ArgumentParser, *, default_dataset: str = "digits",
                    datasets: Sequence[str] | None = None, default_out: str | None = None,
                    auto_out: str | None = None, epochs: int = 10, batch_size: int = 64,
                    seed: int = 0) -> argparse.ArgumentParser:
    """Add all shared arguments (data, run and training groups) to ``parser`` and return it.

    Example::

        >>> parser = add_common_args(argparse.ArgumentParser(), epochs=10, batch_size=64)
        >>> args = parser.parse_args(["--out", "runs/demo", "--seed", "3"])
        >>> args.dataset, args.epochs, args.seed, args.device
        ('digits', 10, 3, 'auto')
    """
    add_data_args(parser, default_dataset=default_dataset, datasets=datasets)
    add_run_args(parser, default_out=default_out, auto_out=auto_out)
    add_training_args(parser, epochs=epochs, batch_size=batch_size, seed=seed)
    return parser


def apply_preset(args: argparse.Namespace, preset: Mapping[str, Any]) -> argparse.Namespace:
    """Fill the arguments the user left unset (``None``) with the preset's values; the user's values win."""
    for key, value in preset.items():
        if getattr(args, key, None) is None:
            setattr(args, key, list(value) if isinstance(value, list) else value)
    return args
