"""Out-of-distribution reconstruction of trained flows (PAPER.md sections 2.7 and 2.8): ``python -m experiments.ood``.

The paper feeds a pre-trained affine Glow and a pre-trained Residual Flow images far from their training data
(noise, textures, other data sets) and measures, per image, the reconstruction error ``||x - f^-1(f(x))||_2`` in the
model's input space: the Glow fails to reconstruct some inputs (Inf/NaN), the Residual Flow reconstructs all. This
study measures the same, plus bits per dimension, for any set of models:

- by default the embedded zoo (:func:`experiments.common.image_flows.embedded_zoo`): an affine, an additive and a
  bounded affine Glow and a Residual Flow trained (or reused, from ``--zoo-dir``) on the embedded digits;
- ``--model PATH`` (repeatable, ``LABEL=PATH`` to name it): a run folder of ``python -m experiments.glow`` or of the
  zoo's Residual Flow, y0ast's pre-trained Glow folder (or ``glow.zip``), or rtqichen's pre-trained Residual Flow
  ``cifar10_resflow_16-16-16.pth`` (see :mod:`invertible.loaders`).

Sets (:mod:`experiments.ood.sets`): the in-distribution train and test splits, synthetic Gaussian, uniform,
Rademacher and constant images, and every real OOD set that can be read here (MNIST-family sets for the digits;
SVHN, DTD/Places ``.t7`` and TinyImageNet from ``--ood-dir`` for CIFAR-10 models; crops of two photos always).

Per model and set (``results.csv``, ``results.md``, ``metrics.json``): the reconstruction error per image (mean over
all images, which is Inf once one is; mean, median and maximum over the finite ones; minimum), the largest error
relative to the image's norm (the library's verdict reads it), the number of images whose reconstruction holds NaN
or Inf and their share, the images whose latent ``f(x)`` is already non-finite, and
bits per dimension (mean, minimum, maximum over the finite values; share of non-finite ones). Per-image values go
to ``per_sample/<model>.npz``; histograms to ``plots/recon_<model>.png`` and ``plots/bpd_<model>.png``; the worst
reconstructed inputs to ``plots/worst_<model>.png``.

Examples::

    python -m experiments.ood              # embedded zoo on digits (training included: ~40 min on 2 shared cores)
    python -m experiments.ood --quick --out runs/ood/quick      # seconds-long models, 64 images per set
    python -m experiments.ood --model glow=ood-pretrained/pretrained --model resflow=cifar10_resflow_16-16-16.pth \\
        --dataset cifar10 --data-dir data --ood-dir ood-pretrained/ood_data --n 10000
"""

from ..common.image_flows import FlowNotFound
from ..common.study import Study
from . import evaluate, options
from .evaluate import FIELDS, evaluate_set
from .tables import markdown_tables

__all__ = ["FIELDS", "STUDY", "evaluate_set", "main", "markdown_tables"]

STUDY = Study.of(options, evaluate, description=__doc__, name_keys=("dataset",), user_errors=(FlowNotFound,),
                 threads=None, cost="about 30 minutes on 2 CPU cores the first time (most of it training the zoo's "
                                    "four models), about 6 minutes once the zoo exists (README)")
main = STUDY.main
