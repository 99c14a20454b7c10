"""Loaders of published pre-trained flows into this library's models, reading the files without running their code.

- :func:`load_y0ast_glow`: y0ast/Glow-PyTorch's CIFAR-10 Glow (``glow_affine_coupling.pt`` + ``hparams.json``) as
  our :class:`~invertible.models.Glow`, with y0ast's preprocessing, bits/dim and latent layout
  (:mod:`~invertible.loaders.y0ast_glow`).
- :func:`load_resflow`: rtqichen/residual-flows' CIFAR-10 Residual Flow (``cifar10_resflow_16-16-16.pth``) as our
  :class:`~invertible.models.ResidualFlow`, with the training or the EMA weights
  (:mod:`~invertible.loaders.rtqichen_resflow`).
- :func:`read_torch_file`: the restricted unpickler both rely on for files that hold objects of missing packages
  (:mod:`~invertible.loaders.safe_pickle`).
"""

from .rtqichen_resflow import (
    RESFLOW_ARGS,
    ResflowCheckpoint,
    infer_resflow_config,
    load_resflow,
    read_resflow_checkpoint,
    resflow_from_state_dict,
)
from .safe_pickle import Placeholder, SafeLoad, read_torch_file
from .y0ast_glow import (
    Y0astArchitecture,
    infer_y0ast_architecture,
    load_y0ast_glow,
    read_y0ast_folder,
    y0ast_bits_per_dim,
    y0ast_glow_from_state_dict,
    y0ast_latents,
    y0ast_postprocess,
    y0ast_preprocess,
    y0ast_reverse,
)

__all__ = [
    "RESFLOW_ARGS",
    "Placeholder",
    "ResflowCheckpoint",
    "SafeLoad",
    "Y0astArchitecture",
    "infer_resflow_config",
    "infer_y0ast_architecture",
    "load_resflow",
    "load_y0ast_glow",
    "read_resflow_checkpoint",
    "read_torch_file",
    "read_y0ast_folder",
    "resflow_from_state_dict",
    "y0ast_bits_per_dim",
    "y0ast_glow_from_state_dict",
    "y0ast_latents",
    "y0ast_postprocess",
    "y0ast_preprocess",
    "y0ast_reverse",
]
