"""How hard an NF-regularized classifier's NF term pulls on its flow, computed from the run's checkpoints.

This is the one measurement the classification page makes itself (from stored checkpoints, deterministically):
the study does not store it. ``||coeff * grad NLL|| / ||grad cross-entropy||`` over the flow's parameters on the
first training images, at the first and the last checkpoint.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from invertible.regularizers import nf_term

from ...classification.reload import load_run

__all__ = ["nf_pull"]


def nf_pull(folder: Path, checkpoint: str, batch: int = 128) -> dict[str, float]:
    """The NF weight, the negative log-likelihood per image (nats) and the pull ratio at one checkpoint
    (``init`` or ``latest``), in training mode as in a training step."""
    args, data, model = load_run(folder, checkpoint)
    model.train()
    x = data.to_model(data.train.images[:batch])
    y = data.train.labels[:batch].to(x.device)
    params = [p for p in model.flow.parameters() if p.requires_grad]
    logits, z, logdet = model(x)
    nll = nf_term(z, logdet, 1.0, prior=args.use_prior, levels=round(2 ** args.n_bits_x))
    norms = []
    for loss in (model.loss(logits, y), nll):
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        norms.append(math.sqrt(sum(float(g.pow(2).sum()) for g in grads if g is not None)))
    return {"coeff": args.nf_coeff, "nll": float(nll.detach()), "ratio": args.nf_coeff * norms[1] / norms[0]}
