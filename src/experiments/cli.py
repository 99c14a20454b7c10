"""Command-line arguments shared by every study.

Example::

    >>> import argparse
    >>> parser = add_common_args(argparse.ArgumentParser(), default_dataset="digits", epochs=10, batch_size=64)
    >>> args = parser.parse_args(["--out", "runs/demo", "--seed", "3"])
    >>> args.dataset, args.epochs, args.seed, args.device
    ('digits', 10, 3, 'auto')
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable, Sequence

from .data.sources import DEFAULT_DATA_DIR, dataset_names

__all__ = ["add_data_args", "add_run_args", "add_training_args", "add_common_args", "apply_preset", "parse_and_resolve"]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _seed(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"seed must be a non-negative integer, got {text}")
    return value


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
    group.add_argument("--seed", type=_seed, default=seed,
                       help="Seed of every random number generator; equal seeds give equal runs "
                       "(default: %(default)s).")
    group.add_argument("--epochs", type=_positive_int, default=epochs,
                       help="Number of passes over the training set (default: %(default)s).")
    group.add_argument("--batch-size", type=_positive_int, default=batch_size,
                       help="Number of examples per optimisation step, over all processes (default: %(default)s).")


def add_common_args(parser: argparse.ArgumentParser, *, default_dataset: str = "digits",
                    datasets: Sequence[str] | None = None, default_out: str | None = None,
                    auto_out: str | None = None, epochs: int = 10, batch_size: int = 64,
                    seed: int = 0) -> argparse.ArgumentParser:
    """Add all shared arguments (data, run and training groups) to ``parser`` and return it."""
    add_data_args(parser, default_dataset=default_dataset, datasets=datasets)
    add_run_args(parser, default_out=default_out, auto_out=auto_out)
    add_training_args(parser, epochs=epochs, batch_size=batch_size, seed=seed)
    return parser


def parse_and_resolve(parser: argparse.ArgumentParser, resolve: Callable[[argparse.Namespace], argparse.Namespace],
                      argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` and fill study-dependent defaults with ``resolve``; a ``ValueError`` from it (a bad
    combination of flags) exits with a usage error like any bad flag."""
    args = parser.parse_args(argv)
    try:
        return resolve(args)
    except ValueError as exc:
        parser.error(str(exc))


def apply_preset(args: argparse.Namespace, preset: dict[str, Any]) -> argparse.Namespace:
    """Fill the arguments the user left unset (``None``) with the preset's values; the user's values win."""
    for key, value in preset.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return args
