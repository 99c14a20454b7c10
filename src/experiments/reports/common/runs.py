"""The runs a report reads, declared as data, and the one way missing runs are made.

A report lists its runs as :class:`RunSpec` values: which study, with which flags, into which folder (relative
to the report's ``--runs`` root), with which seed, in which setting. :func:`make_runs` runs the missing and
unfinished ones in this process through :func:`experiments.common.study.call`, as ``python -m experiments.<study>``
would, one after the other in the order declared (a run may read an earlier one's folder: ``{runs}`` in a flag is
the root); a finished run (its ``metrics.json`` holds the runner's ``timing``) is reused, an interrupted one is
continued with ``--resume``. :class:`Runs` gives the page writer the finished runs' config and metrics.

Example:
    >>> from pathlib import Path
    >>> spec = RunSpec("flows2d", "toy/flows2d", ("--models", "affine", "--preset", "cpu"), seed=1,
    ...                quick=("--iterations", "10"))
    >>> spec.argv_for(Path("runs"), quick=False)
    ['--models', 'affine', '--preset', 'cpu', '--seed', '1', '--out', 'runs/toy/flows2d']
    >>> spec.argv_for(Path("runs"), quick=True)
    ['--models', 'affine', '--quick', '--iterations', '10', '--seed', '1', '--out', 'runs/toy/flows2d']
    >>> [s.folder for s in seeded("flows2d", "toy/flows2d", seeds=(0, 1))]
    ['toy/flows2d/seed=0', 'toy/flows2d/seed=1']
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from ...common.runs import read_csv

__all__ = ["ReportError", "RunRecord", "RunSpec", "Runs", "make_runs", "seeded", "state"]

_log = logging.getLogger(__name__)


class ReportError(RuntimeError):
    """A report cannot go on (a run it needs was refused or crashed); the message says what to do."""


@dataclass(frozen=True)
class RunSpec:
    """One run of a report.

    Attributes:
        study: the study's name (``python -m experiments.<study>``).
        folder: the run folder, relative to the report's ``--runs`` root.
        argv: the study's flags (not ``--out`` or ``--seed``); ``{runs}`` stands for the root (a flag naming
            another run's folder, e.g. ``("--flows", "{runs}/toy/flows2d")``) and ``{seed}`` for the seed.
        seed: the ``--seed`` (``None``: the study's default).
        setting: the group of runs the report's ``--settings`` chooses by name.
        quick: flags added after ``--quick`` when the report runs at the quick presets (``--quick``: the tests),
            to shrink the run further; ``--preset X`` and the flags ``quick`` sets are left out of ``argv`` then.
        in_quick: whether ``--quick`` makes this run at all (a report whose default has many runs keeps a few).
        group: the claim group: runs that differ only in their seed share it (:func:`seeded` sets it).
        quick_only: made only by ``--quick`` (a small stand-in another quick run reads, e.g. models to evaluate
            instead of a zoo that takes minutes to train).
    """

    study: str
    folder: str
    argv: tuple[str, ...] = ()
    seed: int | None = None
    setting: str = "default"
    quick: tuple[str, ...] = ()
    in_quick: bool = True
    group: str = ""
    quick_only: bool = False

    def __post_init__(self) -> None:
        for flag in ("--out", "--seed", "--quick", "--resume", "--overwrite"):
            if flag in self.argv:
                raise ValueError(f"RunSpec {self.folder}: {flag} is the report's to set; leave it out of argv")
        if not self.group:
            object.__setattr__(self, "group", self.folder)

    def argv_for(self, root: Path, quick: bool) -> list[str]:
        """The study's command line for this run under ``root`` (at the quick preset when ``quick``)."""
        seed = "" if self.seed is None else str(self.seed)
        argv = [a.replace("{runs}", str(root)).replace("{seed}", seed) for a in self.argv]
        if quick:
            for flag in ["--preset", *(a for a in self.quick if a.startswith("--"))]:
                argv = _without(argv, flag)
            argv += ["--quick", *(a.replace("{runs}", str(root)).replace("{seed}", seed) for a in self.quick)]
        if self.seed is not None:
            argv += ["--seed", str(self.seed)]
        return argv + ["--out", str(root / self.folder)]


def _preset(argv: list[str]) -> str | None:
    return argv[argv.index("--preset") + 1] if "--preset" in argv[:-1] else None


def _without(argv: list[str], flag: str) -> list[str]:
    """``argv`` without ``flag`` and its values (the words up to the next flag)."""
    if flag not in argv:
        return argv
    at = argv.index(flag)
    end = next((i for i in range(at + 1, len(argv)) if argv[i].startswith("--")), len(argv))
    return argv[:at] + argv[end:]


def seeded(study: str, folder: str, argv: Sequence[str] = (), *, seeds: Iterable[int], quick_seeds: int = 1,
           in_quick: bool = True, **fields: Any) -> list[RunSpec]:
    """The same run once per seed, in ``<folder>/seed=<s>``, all in the claim group ``folder``; ``--quick`` makes
    the first ``quick_seeds`` of them (if ``in_quick``)."""
    return [RunSpec(study, f"{folder}/seed={s}", tuple(argv), seed=s, group=folder,
                    in_quick=in_quick and i < quick_seeds, **fields) for i, s in enumerate(seeds)]


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def state(folder: Path) -> str:
    """``"finished"`` (its metrics hold the runner's timing, whatever its status), ``"unfinished"`` (a config
    but no timing: interrupted or running) or ``"missing"``."""
    metrics = _read_json(folder / "metrics.json")
    if metrics is not None and "timing" in metrics:
        return "finished"
    return "unfinished" if (folder / "config.json").is_file() else "missing"


def make_runs(specs: Sequence[RunSpec], root: Path, *, quick: bool = False) -> dict[str, str]:
    """Run every missing or unfinished run of ``specs`` under ``root`` in this process; returns what happened
    per folder (``reused``, ``ran``, ``resumed`` or ``failed``: a run that ended with exit status 1 is a result,
    its page says so). Raises :class:`ReportError` when a study refuses a run (exit status 2: e.g. a folder
    locked by a live run, or one whose stored flags differ from the declaration)."""
    from ...common.study import call

    done: dict[str, str] = {}
    for spec in specs:
        folder = root / spec.folder
        now = state(folder)
        declared_quick = quick or _preset(list(spec.argv)) == "quick"
        stored = _read_json(folder / "config.json") or {}
        if now != "missing" and (stored.get("args", {}).get("preset") == "quick") != declared_quick:
            held, made = ("of", "does not make") if not declared_quick else ("not of", "makes")
            raise ReportError(f"{folder} holds a run {held} a quick preset, but the report {made} it so; move it "
                              "away or choose another --runs (nothing was deleted)")
        if now == "finished":
            _log.info("reusing %s", folder)
            done[spec.folder] = "reused"
            continue
        argv = spec.argv_for(root, quick) + (["--resume"] if now == "unfinished" else [])
        status = call(spec.study, argv)
        if status == 2:
            raise ReportError(
                f"python -m experiments.{spec.study} {' '.join(argv)} was refused (exit status 2, the reason is "
                f"printed above). If {folder} holds an old run of other flags, move it away or delete it, then "
                "run the report again; nothing was deleted.")
        done[spec.folder] = "failed" if status else ("resumed" if now == "unfinished" else "ran")
    return done


@dataclass
class RunRecord:
    """A run folder as the page writer reads it (a finished run, or a placeholder for one that is not)."""

    spec: RunSpec
    root: Path
    finished: bool
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def args(self) -> dict[str, Any]:
        """The run's resolved flags (``config.json``'s ``args``)."""
        return self.config.get("args", {})

    @property
    def seed(self) -> int | None:
        return self.args.get("seed")

    @property
    def preset(self) -> str:
        return str(self.args.get("preset", ""))

    @property
    def demo(self) -> bool:
        """A run of a ``quick`` preset: a small-model demonstration, never counted as agreement with the paper."""
        return self.preset == "quick"

    @property
    def status(self) -> str:
        return str(self.metrics.get("status", "missing"))

    @property
    def completed(self) -> bool:
        return self.finished and self.status == "completed"

    @property
    def name(self) -> str:
        return self.spec.folder

    @property
    def path(self) -> Path:
        return self.root / self.spec.folder

    def json(self, name: str) -> dict[str, Any]:
        """Another JSON file of the run folder (e.g. ``probes.json``); an empty dict when absent."""
        return _read_json(self.path / name) or {}

    def csv(self, name: str) -> list[dict[str, str]]:
        """A CSV log of the run folder as rows of strings; empty when absent."""
        path = self.path / name
        return read_csv(path) if path.is_file() else []

    @property
    def command(self) -> str:
        """The command that made (or makes) this run: at the quick preset when the report made it so."""
        argv = list(self.spec.argv)
        declared_quick = "--preset" in argv and argv[argv.index("--preset") + 1] == "quick"
        shown = self.spec.argv_for(self.root, quick=self.demo and not declared_quick)
        return " ".join(["python -m experiments." + self.spec.study, *shown])


class Runs:
    """The runs of a report under one root: finished ones with their config and metrics, the others as
    placeholders (``finished`` False), in the order declared."""

    def __init__(self, root: Path, specs: Sequence[RunSpec]) -> None:
        self.root, self.specs = Path(root), list(specs)
        folders = [s.folder for s in self.specs]
        if len(set(folders)) != len(folders):
            raise ValueError(f"two runs share a folder: {sorted(f for f in folders if folders.count(f) > 1)}")

    @cached_property
    def _records(self) -> dict[str, RunRecord]:
        out = {}
        for spec in self.specs:
            path = self.root / spec.folder
            finished = state(path) == "finished"
            out[spec.folder] = RunRecord(spec, self.root, finished, _read_json(path / "config.json") or {} if finished
                                         else {}, _read_json(path / "metrics.json") or {} if finished else {})
        return out

    def __getitem__(self, folder: str) -> RunRecord:
        try:
            return self._records[folder]
        except KeyError:
            raise KeyError(f"no run {folder!r} is declared; the runs are {', '.join(self._records)}") from None

    def __iter__(self) -> Iterator[RunRecord]:
        return iter(self._records.values())

    def has(self, group: str) -> bool:
        """Whether a run of the claim group ``group`` is declared."""
        return any(r.spec.group == group for r in self)

    def group(self, group: str, *, finished: bool = True) -> list[RunRecord]:
        """The runs of a claim group (the seeds of one configuration), finished ones only unless asked."""
        found = [r for r in self if r.spec.group == group and (r.finished or not finished)]
        if not any(r.spec.group == group for r in self):
            groups = ", ".join(dict.fromkeys(r.spec.group for r in self))
            raise KeyError(f"no run group {group!r}; the groups are {groups}")
        return found

    def setting(self, setting: str) -> list[RunRecord]:
        return [r for r in self if r.spec.setting == setting]

    def finished(self) -> list[RunRecord]:
        return [r for r in self if r.finished]
