"""The paper's INN classifier study: ``python -m experiments.classification``.

A Glow without splits (affine or additive couplings, 1x1 convolutions or shuffles) maps an image ``x`` to ``z`` of
the same size; a BatchNorm1d-ReLU-Linear head classifies the first ``--zs-dim`` entries of ``z``. Trained only for
classification, an affine flow may stop being numerically invertible (PAPER.md section 2.1); the run measures it
along the way and can regularize against it (``--nf-coeff``, ``--fd-coeff``, ``--fd-inv-coeff``) or train with
memory-saving gradients (``--mem-saving``).

Examples::

    python -m experiments.classification --nf-coeff 1e-5               # embedded digits, about a minute on a CPU
    python -m experiments.classification --coupling affine --permutation conv --zero-init --use-prior \
        --use-actnorm --nf-coeff 5e-4 --twin      # the regularized model and its unregularized twin, side by side
    python -m experiments.classification --quick                       # seconds: the tests' setting
    python -m experiments.classification --coupling affine --permutation conv --zero-init --use-prior \\
        --use-actnorm --no-inverse-svd --out runs/affine_conv
    python -m experiments.classification --out runs/affine_conv --resume ...   # continue a killed run
    python -m torch.distributed.run --standalone --nproc_per_node=2 -m experiments.classification ...

Each run writes one folder: ``config.json``; ``iteration_log.csv`` (every iteration: losses, running accuracy,
weight/gradient/latent statistics), ``every_N_log.csv`` (every ``--log-every`` iterations: the same plus
reconstruction errors on a fixed test batch and, with ``--mem-saving``, the angle between memory-saving and true
gradients), ``svd_log.csv`` (every ``--svd-every`` iterations: forward and inverse condition numbers and extreme
singular values of the exact Jacobian), ``epoch_log.csv`` (train/test loss, accuracy and reconstruction errors,
the verdict over both sets and kappa at the worst-reconstructed image), ``grad_log.csv`` (every ``--grad-check-every``
iterations: angle and relative error between memory-saving and standard gradients of the classification loss on a
fixed batch of training images, beside kappa; ``plots/memory_saving.png`` and ``plots/angle_vs_kappa.png``);
``metrics.json`` (with ``verdicts``: the library's verdict, :func:`invertible.diagnostics.judge_reconstructions`, on
the whole train and test sets, kappa at their worst-reconstructed and at fixed images; ``first_noninvertible_iteration``
and the other first-failure iterations; with ``--twin``, ``twin``: the unregularized twin's metrics, whose run folder
is ``twin/``); ``checkpoints/`` (``latest.pt`` for ``--resume``, ``init.pt``, ``iter_<N>.pt``); ``plots/``.
"""

from ..common.study import Study
from . import options, train
from .train import ConfigError, build_model

__all__ = ["ConfigError", "STUDY", "build_model", "main"]

STUDY = Study.of(options, train, description="Train the paper's INN classifier (a Glow without splits plus a "
                 "BatchNorm-ReLU-Linear head on the first latents) and measure whether it stays numerically invertible "
                 "(PAPER.md section 2.1).",
                 cost="about 1 minute on 2 CPU cores (digits, 450 iterations: 45 s measured on a fresh clone, 33 s "
                      "of it training; affine and regularized: 1-4 minutes)",
                 name_keys=("dataset",), user_errors=(ConfigError,), seed=3, distributed=True,
                 epilog="Launch on N processes with: python -m torch.distributed.run --standalone "
                        "--nproc_per_node=N -m experiments.classification ...")
main = STUDY.main
