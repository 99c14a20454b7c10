"""The invertibility attack against the trained 2-D checkerboard flows.

PAPER.md section 2.4 attacks CelebA flows: projected sign-gradient ascent on the reconstruction error
``||x - f^-1(f(x))||`` inside a small l-infinity ball around a data point, counting the steps until the
reconstruction is no longer finite. Here the same attack (:func:`invertible.attack.invertibility_attack`) runs
against the four models of a finished ``python -m experiments.flows2d`` run, from checkerboard samples, once per
ball radius (``--radius``; the data lie in ``[-4, 4]^2``). Residual flows' inverses are unrolled for ``--unroll``
fixed-point iterations inside the attack graph (4 in the original) and run to convergence for the reported errors.

Outputs (in ``--out``): ``attack.csv`` (per model, radius and step: largest and median reconstruction error over
the attacked points, fraction of points whose reconstruction is not finite, largest distance moved),
``metrics.json`` (per model and radius: clean and final errors, the largest growth over a point's clean error, the
largest error relative to ``||x||`` where it occurred, the first step at which any point's reconstruction became
non-finite, -1 if none) and ``plots/attack.png``.

A ball of radius 0.5 or 4 keeps the attack near the data (the [-8, 8]^2 grid of flows2d); a ball of radius 256
lets it walk far from the data, where flows2d's sweep finds the affine inverse overflowing.

Examples::

    python -m experiments.flows2d                               # writes runs/flows2d/cpu
    python -m experiments.attack2d --flows runs/flows2d/cpu     # writes runs/attack2d/flows2d-cpu
    python -m experiments.attack2d --flows runs/flows2d/cpu --radius 0.125 2 --steps 500 --out runs/attack2d_long
"""

from ..common.study import Study
from . import attacks, options
from .attacks import FIELDS, ModelsNotFound, plot_attack

__all__ = ["FIELDS", "STUDY", "main", "plot_attack"]

STUDY = Study.of(options, attacks, description=__doc__, name_keys=("flows",), user_errors=(ModelsNotFound,),
                 cost="about 2 minutes on 2 CPU cores (the four cpu-preset models, 64 points, 3 radii of 200 steps; "
                      "README)")
main = STUDY.main
