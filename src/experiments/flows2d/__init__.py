"""2-D checkerboard flows: where affine couplings stop being invertible, and where residual flows do not.

The original's ``train_toy_affine.py`` / ``train_toy_resflow.py`` / ``test_toy.py`` (PAPER.md section 2.3): four
flows are trained by maximum likelihood on the 2-D checkerboard (fresh samples every step, Adam with weight
decay) and then examined far beyond the data:

- ``affine``: RealNVP couplings ``y = x * sigmoid(s + 2) + t`` (no global bound on either Lipschitz constant);
- ``bounded``: the "modified affine" scale ``0.5 * sigmoid(s + 2) + 0.5`` in ``(0.5, 1)``;
- ``additive``: ``y = x + t`` (globally bi-Lipschitz when ``t`` is Lipschitz);
- ``iresnet``: residual blocks ``y = x + g(x)`` with spectrally normalised ``g`` (coefficient 0.8), exact log-det.

Coupling networks are pre-activation MLPs ``act -> Linear(1, h) -> act -> ... -> Linear(h, out)`` with LipSwish
activations, as the original's; couplings alternate which coordinate they transform.

Evaluation (after each model is trained, in eval mode):

- a grid over ``[-8, 8)^2`` (``--grid-size`` points per axis; 320 is the original's step of 0.05): the
  reconstruction error ``||x - f^-1(f(x))||`` and the log-det error ``|logdet - log|det J_autograd||`` in the
  model's float32, the condition number of the Jacobian from a float64 copy of the learned map (float32
  Jacobians cannot resolve more than about 1e7), and the model's likelihood; saved as ``grid_<model>.npz`` and
  drawn side by side in ``plots/heatmaps.png``;
- the data region (checkerboard samples) and the boundaries of squares ``[-R, R]^2`` for ``R = 8 ... 1024``
  (``--far-radii``): median and maximum of the same quantities, in ``regions.csv`` and ``plots/far.png``.

Presets: ``paper`` is the original's size (100 blocks = 200 couplings or 100 residual blocks, four hidden layers
of width 128, 50,000 steps of batch 500: hours per model, use a GPU); ``cpu`` (default) trains four small models
within about ten minutes on two cores; ``quick`` is a smoke run for the tests. ``--blocks``, ``--hidden``,
``--iterations``, ``--batch-size``, ``--grid-size`` override a preset.

The trained weights are kept in ``checkpoints/models.pt``; ``python -m experiments.attack2d --flows RUN`` attacks
them.

Examples::

    python -m experiments.flows2d                               # cpu preset, all four models: runs/flows2d/cpu
    python -m experiments.flows2d --models affine iresnet --quick --out runs/flows2d_quick
    python -m experiments.flows2d --preset paper --device cuda --out runs/flows2d_paper
"""

from ..common.checkerboard import MODELS, build_model, checkerboard, load_models
from ..common.study import Study
from . import options, train
from .evaluate import REGION_FIELDS, evaluate_points, grid_points, region_row, square_boundary
from .figures import plot_run
from .options import PRESETS

__all__ = ["MODELS", "PRESETS", "REGION_FIELDS", "STUDY", "build_model", "checkerboard", "evaluate_points",
           "grid_points", "load_models", "main", "plot_run", "region_row", "square_boundary"]

STUDY = Study.of(options, train, description=__doc__,
                 cost="about 7 minutes on 2 CPU cores (preset cpu, four models of 2,000 steps and their evaluation: "
                      "6.5 min measured; README)")
main = STUDY.main
