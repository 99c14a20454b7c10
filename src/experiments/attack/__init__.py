"""The invertibility attack on trained image flows (PAPER.md section 2.4): ``python -m experiments.attack``.

The paper attacks CelebA 64x64 flows: starting from a training image, centred in its dequantisation cube, projected
sign-gradient ascent on the reconstruction error ``||x - f^-1(f(x))||_2`` inside an l-infinity ball of half a grey
level (``0.5 / 2^5``), 200 steps of 0.0005, drives the affine flow to a non-invertible input (NaN reconstruction at
step 56; the modified affine ``0.5 sigmoid + 0.5`` at step 143), while the Residual Flow stays invertible.
Residual Flows' inverse is unrolled for 4 fixed-point iterations inside the attack graph and run for 200 for the
reported error. CelebA is not available offline, so by default the attack runs on the embedded zoo
(:func:`experiments.common.image_flows.embedded_zoo`: affine, bounded affine and additive Glows and a Residual
Flow trained on the embedded digits, the same runs as ``python -m experiments.ood``), from the first test images,
with the paper's settings scaled to the data's grey levels: radius ``--radius-levels`` (0.5) grey levels, step size
``radius / 32`` (the paper's ratio, 0.0005 against 1/64), 200 steps, iterates clamped to the range of the natural
images. ``--model`` attacks other flows (see ``python -m experiments.ood``).

Outputs (in ``--out``): ``attack.csv`` (per model and step: largest, mean and median accurate reconstruction error
over the attacked images, share of non-finite ones, largest attack-graph error, largest distance moved),
``metrics.json`` (per model: clean and final errors, the largest error reached, how many times the attack raised
it, the largest error relative to the norm of the input where it occurred, the first step at which a
reconstruction became non-finite, -1 if none), ``plots/attack_curves.png`` (the
paper's figure: error over attack steps, one curve per model, crosses where it is no longer finite) and
``plots/attack_<model>.png`` (the attacked inputs, their reconstructions and the difference), ``plots/natural.png``.

Examples::

    python -m experiments.attack                         # the embedded zoo (reused from experiments.ood, or trained)
    python -m experiments.attack --quick --out runs/attack/quick     # seconds-long zoo, 4 images, 20 steps
    python -m experiments.attack --radius-levels 4 --steps 500 --out runs/attack/digits-r4
"""

from ..common.image_flows import FlowNotFound
from ..common.study import Study
from . import attacks, options
from .attacks import FIELDS, attack_flow

__all__ = ["FIELDS", "STUDY", "attack_flow", "main"]

STUDY = Study.of(options, attacks, description=__doc__, name_keys=("dataset",), user_errors=(FlowNotFound,),
                 threads=None, cost="about 2 minutes on 2 CPU cores once the zoo of python -m experiments.ood exists "
                                    "(README); training the zoo first takes about 25 minutes")
main = STUDY.main
