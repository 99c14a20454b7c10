"""One protocol for every study, and the one runner that runs them all.

A study is a package ``experiments/<name>/`` whose ``__init__`` declares ``STUDY = Study(...)``: its flags, its
presets, what it measures (``run(run, args) -> metrics``) and how long its default run takes. Its ``__main__`` is
``STUDY.cli()``. Everything else is the runner's, the same for every study:

- the flags every study has: ``--out``, ``--save-dir``, ``--resume``/``--overwrite``, ``--device``, ``--threads``,
  ``--seed``, ``--preset`` and ``--quick`` (the small setting the tests use);
- parsing, presets (a preset fills the flags the user left unset) and the study's ``resolve`` (derived values and
  checks of flag combinations); every bad flag is a usage error, exit status 2, before anything is written;
- the run folder: named after the configuration when ``--out`` is not given (:func:`run_name`), checked to be
  writable, opened (created, overwritten or resumed) and locked only after the study's ``prepare`` hook has loaded
  what can fail on bad input (data, models), and always closed (lock released), also when the study fails;
- threads, device, torch.distributed (for studies that support it) and logging;
- ``status`` and ``timing`` in ``metrics.json``, and the exit status.

Exit status of ``main()`` (and of ``python -m experiments.<name>``):

====  ==========================================================================================================
0     the run completed (``metrics.json`` has ``status: completed``), or ``--help``
1     the run ended but failed (a ``status`` other than ``completed``, e.g. ``diverged: ...``; its folder holds
      the logs up to the failure), or a crash (an uncaught exception: a bug, or the machine)
2     usage error: a bad flag or flag combination, missing data or model files, an unwritable ``--out``, a run
      folder that exists (without ``--overwrite``/``--resume``), is locked by a live run, or does not match
      ``--resume``; nothing is written
====  ==========================================================================================================

Example: the whole declaration of a study (see CONTRIBUTING.md, "How to add a study")::

    def add_arguments(parser):
        parser.add_argument("--steps", type=positive_int, default=None, help="Training steps (default: per preset).")

    def run(run, args):
        ...  # train and measure, logging into run.csv(...), run.save_checkpoint(...)
        return {"final_loss": loss}

    STUDY = Study(name="mystudy", description="What the study reproduces.", add_arguments=add_arguments, run=run,
                  presets={"default": {"steps": 1000}, "quick": {"steps": 10}},
                  cost="about 2 minutes on 2 CPU cores (measured 1 min 40 s)")
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Mapping, NoReturn, Sequence

import torch

from invertible.checkpoint import CheckpointError

from . import distributed
from .cli import apply_preset, non_negative_int, seed_int
from .data import DataFormatError, DatasetNotFound
from .naming import run_name
from .runs import (ConfigMismatch, OutNotWritable, Run, RunExists, RunLocked, RunNotFound, check_folder,
                   check_writable, open_run)
from .training import DeviceError, resolve_device

__all__ = ["RUNNER_KEYS", "USER_ERRORS", "Study", "call", "load"]

_log = logging.getLogger(__name__)

#: Errors that mean "the input is wrong" (exit status 2) for every study.
USER_ERRORS: tuple[type[BaseException], ...] = (RunExists, RunNotFound, ConfigMismatch, RunLocked, OutNotWritable,
                                                DeviceError, DatasetNotFound, DataFormatError, CheckpointError)
#: The flags the runner adds to every study (their dests); none of them changes a result except ``seed``.
RUNNER_KEYS = ("out", "save_dir", "resume", "overwrite", "device", "threads", "seed", "preset", "quick")


@dataclass(frozen=True)
class Study:
    """The declaration of one study (see the module docstring for what the runner does with it).

    Attributes:
        name: the package name: ``python -m experiments.<name>``; runs go to ``runs/<name>/`` by default.
        description: what the study reproduces (the top of ``--help``).
        add_arguments: adds the study's own flags to the parser; a flag whose default comes from a preset defaults
            to ``None``. Numeric flags use the types of :mod:`experiments.common.cli`.
        run: ``run(run, args) -> metrics``: the work, in the open run folder ``run`` (``run.device`` and
            ``run.inputs`` hold the device and what ``prepare`` returned); the metrics are merged into
            ``metrics.json``. A ``status`` other than ``completed`` makes the exit status 1.
        presets: name -> values for the flags left unset; ``default_preset`` is used without ``--preset``, and a
            ``quick`` preset (seconds to a minute, used by the tests) is required.
        cost: the measured time of the default run, stated in ``--help``.
        resolve: fills derived values and checks combinations of flags, raising ``ValueError`` (a usage error).
        prepare: ``prepare(args, device) -> inputs``, run before the folder is opened: load here what can fail on
            bad input (data, models), so that such a failure leaves no folder behind.
        check_resume: ``check_resume(args, inputs, parts)`` may refuse a checkpoint on ``--resume`` (raise
            :class:`~invertible.checkpoint.CheckpointError`) before the folder's logs are cut back to it.
        name_keys: flags whose values lead the run folder's name (e.g. ``("dataset",)``).
        non_result: flags that change no result: ignored in names and allowed to differ on ``--resume``.
        user_errors: the study's own exception types that mean bad input (exit status 2).
        seed: the default of ``--seed``.
        threads: the default of ``--threads`` (``None``: from the preset, else torch's choice).
        distributed: whether the study runs under torchrun (DistributedDataParallel).
        epilog: more text for the end of ``--help``.
        task: ``(flag, function)``: when ``args.<flag>`` is set, ``function(args, device) -> int`` runs instead of a
            run with a folder of its own (e.g. ``--analyze`` of existing runs); presets are not applied then.
    """

    name: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[Run, argparse.Namespace], Mapping[str, Any] | None]
    presets: Mapping[str, Mapping[str, Any]]
    cost: str
    default_preset: str = "default"
    resolve: Callable[[argparse.Namespace], None] | None = None
    prepare: Callable[[argparse.Namespace, torch.device], Any] | None = None
    check_resume: Callable[[argparse.Namespace, Any, dict[str, Any]], None] | None = None
    name_keys: tuple[str, ...] = ()
    non_result: tuple[str, ...] = ()
    user_errors: tuple[type[BaseException], ...] = ()
    seed: int = 0
    threads: int | None = 1
    distributed: bool = False
    epilog: str = ""
    task: tuple[str, Callable[[argparse.Namespace, torch.device], int]] | None = field(default=None)

    def __post_init__(self) -> None:
        if "quick" not in self.presets or self.default_preset not in self.presets:
            raise ValueError(f"study {self.name}: presets need 'quick' and the default {self.default_preset!r}, "
                             f"got {sorted(self.presets)}")

    @classmethod
    def of(cls, options: ModuleType, work: ModuleType, *, description: str, cost: str, **fields: Any) -> "Study":
        """The study of the package holding the modules ``options`` and ``work``, by convention: ``options``
        defines ``add_arguments`` and ``PRESETS`` (and may define ``resolve``, ``NON_RESULT`` and
        ``DEFAULT_PRESET``); ``work`` defines ``run`` (and may define ``prepare`` and ``check_resume``).
        ``fields`` are the other attributes (``name_keys``, ``user_errors``, ``seed``, ...)."""
        found = {"add_arguments": options.add_arguments, "presets": options.PRESETS, "run": work.run}
        for attribute, module, key in (("resolve", options, "resolve"), ("non_result", options, "NON_RESULT"),
                                       ("default_preset", options, "DEFAULT_PRESET"), ("prepare", work, "prepare"),
                                       ("check_resume", work, "check_resume")):
            if hasattr(module, key):
                found[attribute] = getattr(module, key)
        name = options.__name__.split(".")[-2]
        return cls(name=name, description=description, cost=cost, **{**found, **fields})

    # ------------------------------------------------------------------------------------------------------------
    # Command line
    # ------------------------------------------------------------------------------------------------------------
    def build_parser(self) -> argparse.ArgumentParser:
        """The study's parser: its own flags, then the runner's."""
        epilog = f"Default run: {self.cost}." + (f"\n\n{self.epilog}" if self.epilog else "")
        parser = argparse.ArgumentParser(prog=f"python -m experiments.{self.name}", description=_wrap(self.description),
                                         epilog=_wrap(epilog), formatter_class=argparse.RawDescriptionHelpFormatter)
        self.add_arguments(parser)
        group = parser.add_argument_group("run (the same for every study)")
        group.add_argument("--out", type=Path, default=None,
                           help="Run folder for config, logs, metrics, plots and checkpoints (default: a folder in "
                                "--save-dir named after every flag that differs from the defaults).")
        group.add_argument("--save-dir", type=Path, default=Path("runs") / self.name,
                           help="Folder in which a run without --out gets its own folder (default: %(default)s).")
        mode = group.add_mutually_exclusive_group()
        mode.add_argument("--resume", action="store_true",
                          help="Continue the run in --out from its last checkpoint (its arguments must match).")
        mode.add_argument("--overwrite", action="store_true",
                          help="Delete an existing run in --out and start afresh (refused while it runs).")
        group.add_argument("--device", default="auto",
                           help="Device to run on: auto (CUDA if available), cpu, cuda or cuda:N (default: "
                                "%(default)s).")
        threads = "%(default)s" if self.threads is not None else "per preset, else torch's choice"
        group.add_argument("--threads", type=non_negative_int, default=self.threads,
                           help=f"CPU threads per process, 0 for torch's choice; small models gain little from more "
                                f"and lose much when cores are shared (default: {threads}).")
        group.add_argument("--seed", type=seed_int, default=self.seed,
                           help="Seed of every random number generator; equal seeds give equal runs (default: "
                                "%(default)s).")
        group.add_argument("--preset", choices=list(self.presets), default=None,
                           help=f"Sizes for the flags left unset: {', '.join(self.presets)} (default: "
                                f"{self.default_preset}).")
        group.add_argument("--quick", action="store_true",
                           help="Same as --preset quick: a small run of seconds to a minute (the tests use it).")
        return parser

    def parse(self, argv: Sequence[str] | None = None) -> argparse.Namespace:
        """Parse, apply the preset and resolve; a bad flag exits (``SystemExit(2)``) as argparse does."""
        parser = self.build_parser()
        args = parser.parse_args(argv)
        if args.quick and args.preset not in (None, "quick"):
            parser.error(f"--quick and --preset {args.preset} contradict each other: choose one")
        args.preset = "quick" if args.quick else (args.preset or self.default_preset)
        del args.quick
        task = self._task(args)
        if task is None:
            apply_preset(args, self.presets[args.preset])
        try:
            if self.resolve is not None:
                self.resolve(args)
        except ValueError as exc:
            parser.error(str(exc))
        if args.out is None and task is None:
            args.out = args.save_dir / run_name(args, self._defaults(parser, args), self._naming_ignored(),
                                                self.name_keys, self.default_preset)
        return args

    def _task(self, args: argparse.Namespace) -> Callable[[argparse.Namespace, torch.device], int] | None:
        return self.task[1] if self.task is not None and getattr(args, self.task[0], None) else None

    def _defaults(self, parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
        """The resolved arguments of the default run with the same ``name_keys`` and preset as ``args``."""
        base = argparse.Namespace(**{a.dest: a.default for a in parser._actions if a.dest != "help"})
        for key in self.name_keys:
            setattr(base, key, getattr(args, key))
        base.preset = args.preset
        del base.quick
        apply_preset(base, self.presets[args.preset])
        if self.resolve is not None:
            self.resolve(base)
        return base

    def _naming_ignored(self) -> frozenset[str]:
        from .runs import NON_RESULT_KEYS

        return NON_RESULT_KEYS | frozenset(self.non_result) | frozenset(RUNNER_KEYS) - {"seed"}

    # ------------------------------------------------------------------------------------------------------------
    # Running
    # ------------------------------------------------------------------------------------------------------------
    def main(self, argv: Sequence[str] | None = None) -> int:
        """Run the study with the command-line arguments ``argv``; returns the exit status (module docstring)."""
        try:
            args = self.parse(argv)
        except SystemExit as exc:  # --help (0) or a usage error (2), already printed by argparse
            return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        if args.threads:
            torch.set_num_threads(args.threads)
        errors = USER_ERRORS + tuple(self.user_errors)
        try:
            device = resolve_device(args.device)
            task = self._task(args)
            if task is not None:
                return task(args, device)
            check_writable(args.out)
            if self.distributed:
                device = distributed.init_distributed(device).device
            try:
                return self._run(args, device)
            finally:
                if self.distributed:
                    distributed.shutdown()
        except errors as exc:
            _log.debug("stopped by a user error", exc_info=True)
            print(f"error: {exc}", file=sys.stderr)
            return 2

    def _run(self, args: argparse.Namespace, device: torch.device) -> int:
        wall, cpu = time.time(), time.process_time()
        ignore = set(self.non_result) | set(RUNNER_KEYS) - {"seed"}
        error: BaseException | None = None
        if distributed.is_main():  # before a long preparation: is the folder free for this run?
            try:
                check_folder(args.out, args, resume=args.resume, overwrite=args.overwrite, ignore=ignore)
            except (RunExists, RunNotFound, ConfigMismatch, RunLocked) as exc:
                error = exc
        error = distributed.broadcast_object(error) if distributed.is_distributed() else error
        if error is not None:
            raise error
        inputs = self.prepare(args, device) if self.prepare is not None else None
        check = (lambda parts: self.check_resume(args, inputs, parts)) if self.check_resume is not None else None
        run = open_run(args.out, args, resume=args.resume, overwrite=args.overwrite, ignore=ignore,
                       check_checkpoint=check)
        try:
            run.device, run.inputs = device, inputs
            metrics = dict(self.run(run, args) or {})
            status = str(metrics.get("status", run.metrics.get("status", "completed")))
            metrics.update(status=status, timing={
                "wall_seconds": time.time() - wall, "cpu_seconds": time.process_time() - cpu,
                "threads": torch.get_num_threads(), "resumed": run.resumed, "device": str(device)})
            run.update_metrics(**metrics)
        finally:
            run.close()
        if status != "completed":
            _log.error("%s ended with status %r", self.name, status)
        return 0 if status == "completed" else 1

    def cli(self) -> NoReturn:
        """``python -m experiments.<name>``: log to the terminal (rank 0 only) and exit with :meth:`main`'s status."""
        distributed.configure_logging(logging.INFO)
        sys.exit(self.main())


def _wrap(text: str, width: int = 100) -> str:
    """Text for ``--help``: paragraphs written on one line are wrapped; a docstring's own lines are kept."""
    return "\n\n".join(textwrap.fill(part, width) if "\n" not in part.strip() else part
                       for part in text.strip().split("\n\n"))


def load(name: str) -> Study:
    """The study declared by ``experiments.<name>`` (see :data:`experiments.STUDIES`)."""
    module = importlib.import_module(f"experiments.{name}")
    study = getattr(module, "STUDY", None)
    if not isinstance(study, Study):
        raise ValueError(f"experiments.{name} declares no STUDY; the studies are {', '.join(_names())}")
    return study


def call(name: str, argv: Sequence[str]) -> int:
    """Run the study ``name`` in this process as ``python -m experiments.<name> ARGV`` would; returns the exit
    status. How one study (or a report) runs another without importing its internals."""
    _log.info("running python -m experiments.%s %s", name, " ".join(map(str, argv)))
    return load(name).main([str(a) for a in argv])


def _names() -> tuple[str, ...]:
    from .. import STUDIES

    return STUDIES
