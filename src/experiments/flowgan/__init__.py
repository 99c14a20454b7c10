"""FlowGAN: a Glow trained adversarially, and whether it stays numerically invertible.

``python -m experiments.flowgan``.

The original's ``glow/run_scripts/cifar10/submitted-flowgan.sh`` (PAPER.md section 2.6): an affine Glow
(``sigmoid(h + 2) + 0.01``, reverse permutations, ActNorm starting as the identity, no learned top prior) is the
generator of a GAN whose discriminator is a spectrally normalised convnet trained with a gradient penalty (weight 10).
Variants add the maximum-likelihood loss with a small weight (``mle1e-3``, ``mle1e-4``; in nats per image, as the
original's prior and log-det sums) or bound the ActNorm scales (``maxscale5``). Each step:

1. D step: ``0.5 [BCE(D(x), 1) + BCE(D(g), 0)] + 10 GP`` on a data batch ``x`` (dequantised) and detached samples
   ``g = f^-1(z)``, ``z ~ N(0, I)``, whose non-finite pixels are set to 0;
2. flow step: ``BCE(D(g'), 1)`` on fresh samples plus ``w_mle * NLL(x)``; NaN/Inf gradient entries are set to 0.

Sample quality is a Fréchet distance in the features of a small classifier trained on the same data
(:mod:`experiments.flowgan.features`), not an FID. The snapshots kept every ``--eval-every`` steps go through
the same stability analysis as ``python -m experiments.glow`` (:mod:`experiments.common.glow.analysis`).

Deviation: the original adds uniform dequantisation noise to the generated images before D as well; since the flow's
samples already model dequantised images, that shifts them by half a grey level against the real ones, so here D sees
the samples as they are.

Examples::

    python -m experiments.flowgan                                     # digits, four variants
    python -m experiments.flowgan --variants gan gan+mle1e-2 --disc-lr 5e-5
    python -m experiments.flowgan --analyze runs/flowgan/x

The study folder has the layout of ``experiments.glow``'s, one ``models/<variant>/`` run folder per variant, whose
``train_log.csv`` holds the D and G losses, the gradient penalty, the D accuracies and the share of non-finite
samples in each generator batch, and ``eval_log.csv`` the Fréchet distance (``fd``) besides the Glow columns.
"""

from ..common.glow.analysis import ANALYSED_STUDY
from ..common.study import Study
from . import options, train
from .discriminator import Discriminator, gradient_penalty
from .options import variant
from .train import EVAL_FIELDS, TRAIN_FIELDS, FrechetScorer

__all__ = ["Discriminator", "EVAL_FIELDS", "FrechetScorer", "STUDY", "TRAIN_FIELDS", "gradient_penalty", "main",
           "variant"]

STUDY = Study.of(options, train, description="Train an affine Glow adversarially (FlowGAN) against a spectrally "
                 "normalised conv discriminator with a gradient penalty, optionally mixed with maximum likelihood or "
                 "with bounded ActNorm scales; one run per --variants entry, then the stability analysis of every "
                 "snapshot (PAPER.md section 2.6).",
                 cost="about 8 minutes on 2 CPU cores (digits, four variants of 264 steps and their analysis; README)",
                 **ANALYSED_STUDY, epilog="Analysis only: python -m experiments.flowgan --analyze RUN_FOLDER")
main = STUDY.main
