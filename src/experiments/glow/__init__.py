"""Glow trained by maximum likelihood, and whether it stays numerically invertible: ``python -m experiments.glow``.

The original's ``glow/`` study (PAPER.md section 2.5): an affine Glow (scale ``sigmoid(h + 2) + eps``) and an
additive Glow are trained by maximum likelihood (Adamax, learning-rate warm-up, uniform dequantisation); snapshots
kept along the way are then measured on the test data, on the model's own samples, on Gaussian and Rademacher noise
and on an out-of-distribution set: non-finite samples, condition number of the Jacobian, log-det error, bits per
dimension, and the distance to the input after one and after nine round trips. The claim under test: the affine
model develops instabilities while the additive one does not.

Examples::

    python -m experiments.glow                                      # digits, affine and additive, minutes on a CPU
    python -m experiments.glow --dataset fashion-mnist --models affine additive affine-tanh_exp
    python -m experiments.glow --quick                              # seconds: the tests' setting
    python -m experiments.glow --out runs/glow/x --resume          # continue a killed run
    python -m experiments.glow --analyze runs/glow/x               # re-run the analysis only

A study folder holds ``config.json``, ``models/<name>/`` (one run folder per model: ``config.json``,
``train_log.csv`` (every step), ``eval_log.csv`` (test bits per dimension, non-finite samples, round-trip pixel
distances every ``--eval-every`` steps), ``metrics.json``, ``checkpoints/latest.pt`` for ``--resume`` and
``checkpoints/step_<N>.pt`` snapshots, ``plots/samples_<N>.png`` and ``plots/training.png``), ``analysis.csv`` (one
row per model, snapshot and probe set; see :mod:`experiments.common.glow.analysis`), ``probes.json``,
``metrics.json`` and ``plots/analysis_*.png`` (each quantity over training, one panel per probe set, the models side
by side) and ``plots/recon_<model>.png``.
"""

from ..common.glow.analysis import ANALYSED_STUDY, ANALYSIS_FIELDS, PROBE_SETS
from ..common.glow.model import load_run, snapshots
from ..common.study import Study
from . import options, train
from .train import EVAL_FIELDS, TRAIN_FIELDS

__all__ = ["ANALYSIS_FIELDS", "EVAL_FIELDS", "PROBE_SETS", "STUDY", "TRAIN_FIELDS", "load_run", "main", "snapshots"]

STUDY = Study.of(options, train, description="Train Glow by maximum likelihood (one run per --models entry), then "
                 "measure over the saved snapshots whether each model stays numerically invertible on data, on its own "
                 "samples, on noise and on an out-of-distribution set (PAPER.md section 2.5).",
                 cost="about 11 minutes on 2 CPU cores (digits, two models of 2,300 steps and their analysis; README)",
                 **ANALYSED_STUDY,
                 epilog="Analysis only: python -m experiments.glow --analyze RUN_FOLDER [RUN_FOLDER ...]")
main = STUDY.main
