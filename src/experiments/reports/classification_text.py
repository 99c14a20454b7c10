"""The prose of docs/results/classification.md (kept apart from the code that measures).

``INTRO`` explains what the tables hold; ``FINDINGS`` states what the runs show beside the paper. The tables,
the per-setting status lines and the figures are generated from the run folders; the findings quote numbers
from the runs of 2026-11-29 (seeded, so a rerun on the same software reproduces them up to float32 noise).
"""

__all__ = ["FINDINGS", "INTRO"]

INTRO: list[str] = [
    "The paper's INN classifier (a Glow without splits, `z = F(x)`, with a BatchNorm-ReLU-Linear head on `z`) "
    "trained with the flags of the original README's classification commands, translated to kebab-case "
    "(`experiments/classification/readme_runs.py`), plus the additive baselines. The data are scikit-learn's "
    "8x8 digits (1438 training and 359 test images, `D = 64` dimensions) instead of CIFAR-10 (`D = 3072`); "
    "the flow has 3 levels of 4 steps with 64 hidden channels (about 0.36 M flow parameters) and seed 3.",
    "",
    "What the columns mean:",
    "",
    "- **recon** `||x - F^-1(F(x))||` per image in normalised input space, computed in float32 (the training "
    "precision) over the whole training and test sets; mean and max over images; **non-finite test** is the "
    "share of test images whose reconstruction holds Inf/NaN.",
    "- **κ fwd / κ inv** condition number of the exact Jacobian of `F` and of `F^-1` (a float64 copy of the "
    "trained flow, worst of 8 fixed test images); they agree because `J_{F^-1} = J_F^-1`. **σ_min** the smallest "
    "singular value of `J_F` there (`1 / σ_min = Lip(F^-1)` locally).",
    "- **non-invertible** yes when any reconstruction is non-finite or off by more than 1% of `||x||`.",
    "- **mem-saving grad angle** angle (radians) between memory-saving and ordinary gradients of the "
    "classification loss on the fixed test batch at the end (the paper's gradient-angle measurement).",
    "",
    "The README's regularizer weights were chosen for CIFAR-10. Two extra runs per permutation put them on "
    "the same footing at `D = 64`:",
    "",
    "- `*_nf_scaled`: the NF term sums `log|det J|` and `log p(z)` over all `D` dimensions, so its gradient "
    "grows with `D` while the cross-entropy's does not. The same pull per dimension as 1e-5 on CIFAR-10 is "
    "`1e-5 * 3072 / 64 = 4.8e-4` here.",
    "- `*_fd_scaled`: the study's default finite-difference form is the intended one (unit directions, "
    "divided by `eps^2`, batch mean: about `||J||_F^2 / D`); the original code's form (directions normalised per "
    "feature over the batch, divided by `eps`, summed over the batch: about `eps * ||J||_F^2`) is `eps * D = "
    "307` times larger on CIFAR-10. The README's 1e-4 in the original form is therefore 3.1e-2 in the intended "
    "one. `affine_conv_fd_original` runs the original form itself at 1e-4 (only `eps * D = 6.4` times the "
    "intended form at `D = 64`).",
    "- `affine_conv_float64`: the unregularized 1x1-conv model trained in float64, to separate a badly "
    "conditioned map from float32 round-off.",
]

FINDINGS: list[str] = []
