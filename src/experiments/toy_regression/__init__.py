"""Toy 2-D regression onto a rank-1 target: an affine Glow loses its inverse unless the NF term is on.

The original's ``toy_2d_regression.py`` (PAPER.md section 2.2): a 24-step affine Glow on 2-D inputs ``x = (a, b)``,
``a, b ~ N(0, 1)``, trained by full-batch mean squared error to map ``x`` onto the target ``(~0, b)`` (first
coordinate drawn with variance 1e-24). The target map is rank 1, so fitting it drives one singular value of the
Jacobian towards 0: the inverse explodes. The NF term ``-nf_coeff * mean log p(x)`` penalises that contraction.

Every ``--log-every`` steps, each run logs to ``train_nf_<coeff>.csv``:

- the training loss, its MSE and negative log-likelihood parts;
- the reconstruction error ``||x - f^-1(f(x))||`` over the training points (mean, max, fraction non-finite) and
  the condition number ``kappa = sigma_max / sigma_min`` of the Jacobian at the worst training point (the
  original's measurement) -- ``cond`` from a float64 copy of the learned map (its true conditioning, beyond what
  float32 can resolve) and ``cond_f32`` from the float32 Jacobian as the original computed it;
- the same on a grid over ``[-E, E]^2`` (``--grid-extent``): the largest reconstruction error, the condition
  number at that worst grid point, and the largest condition number anywhere on the grid.

Quirks of the original and what this script does (PAPER.md sections 2.2 and 5):

- ActNorm starts as the identity (no data initialisation): kept.
- The original's ActNorm log-det is multiplied by the feature count (2), which only changes the NF term's weight
  on the ActNorm scales: the correct log-det by default, ``--actnorm-logdet-factor 2`` reproduces the quirk.
- Coupling scale ``sigmoid(h + 2) + 1e-6`` with log-det ``log sigmoid(h + 2)`` in the original; here the log-det
  is ``log(sigmoid(h + 2) + 1e-6)``, the exact one (a relative difference below 1e-6).
- The data are drawn exactly as the original draws them (numpy's legacy generator seeded with ``--seed``, 1111 by
  default), so ``--preset paper`` trains on the original's 10,000 points.

Presets: ``paper`` is the original (10,000 points, Adam 1e-4, 40,000 full-batch steps; hours on a CPU, minutes on
a GPU); ``cpu`` (default) uses 500 points and Adam 1e-3 for 5,000 steps, about ten minutes for both runs on 2
cores (Adam moves a parameter by up to about ``lr`` per step, so this can travel as far as the original's run),
long enough for the NF run to settle while the unregularized one keeps contracting; ``quick`` is a smoke run for
the tests (``--quick``). Any of ``--points``, ``--iterations``, ``--lr``, ``--log-every`` overrides the preset.

Examples::

    python -m experiments.toy_regression                          # both runs (NF 0 and 1e-6), one figure
    python -m experiments.toy_regression --quick                  # seconds: the tests' setting
    python -m experiments.toy_regression --nf-coeff 1e-6 --out runs/toy_nf
    python -m experiments.toy_regression --preset paper --device cuda --out runs/toy_paper
"""

from ..common.study import Study
from . import options, train
from .options import PRESETS
from .train import FIELDS, build_model, coeff_label, make_data, measure, plot_runs

__all__ = ["FIELDS", "PRESETS", "STUDY", "build_model", "coeff_label", "make_data", "main", "measure", "plot_runs"]

STUDY = Study.of(options, train, description=__doc__, seed=1111, task=("remeasure", train.remeasure),
                 cost="about 10 minutes on 2 CPU cores (preset cpu, both runs of 5,000 steps; README)")
main = STUDY.main
