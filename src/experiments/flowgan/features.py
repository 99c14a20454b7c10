"""A small convolutional classifier trained on the study's own data, and the Fréchet distance in its features.

The original FlowGAN scores samples with an "FID" computed from Inception-v3 logits; those ImageNet weights cannot be
downloaded here, and Inception features of 8x8 digits would mean little anyway. Instead this module trains a small
classifier on the same data set and measures the **Fréchet distance between the Gaussians fitted to its penultimate
features** of generated and of test images. The values compare runs on the same data set with the same classifier;
they are not FID values and cannot be compared with published ones.

The FlowGAN study trains it on first use and caches it in a run folder (``--classifier-dir``)::

    >>> from experiments.flowgan.features import frechet_distance
    >>> import torch
    >>> a = torch.randn(500, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> round(frechet_distance(a, a), 12)
    0.0

Inputs are images in the flows' space ``[-0.5, 0.5)`` (grey levels ``k`` as ``(k + u) / L - 0.5``).
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invertible.checkpoint import load_checkpoint

from ..common.data import epoch_batches, load_dataset, make_generator, pad_to_multiple
from ..common.runs import open_run

__all__ = ["FeatureClassifier", "classifier_features", "frechet_distance", "get_feature_classifier",
           "train_feature_classifier"]

_log = logging.getLogger(__name__)


class FeatureClassifier(nn.Module):
    """conv3x3(32) - ReLU - conv3x3/2(64) - ReLU - conv3x3/2(64) - ReLU - Linear(features) - ReLU - Linear(classes).

    :meth:`features` returns the penultimate activations (after the ReLU), the space of the Fréchet distance.
    """

    def __init__(self, shape: Sequence[int], num_classes: int, features: int = 64) -> None:
        super().__init__()
        c, h, w = shape
        self.shape = tuple(shape)
        self.body = nn.Sequential(
            nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
            nn.Linear(64 * math.ceil(math.ceil(h / 2) / 2) * math.ceil(math.ceil(w / 2) / 2), features), nn.ReLU())
        self.head = nn.Linear(features, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """``||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2)`` of Gaussians fitted to the rows of ``a``
    and ``b`` (float64; the matrix square root through symmetric eigen-decompositions, so it stays real)."""
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"frechet_distance needs two (n, d) feature matrices, got {tuple(a.shape)}, {tuple(b.shape)}")
    if len(a) < 2 or len(b) < 2:
        return math.nan
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    vals, vecs = torch.linalg.eigh(s_a)
    root_a = (vecs * vals.clamp_min(0).sqrt()) @ vecs.T
    middle = root_a @ s_b @ root_a
    cross = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    return float((mu_a - mu_b).pow(2).sum() + torch.trace(s_a) + torch.trace(s_b) - 2 * cross)


@torch.no_grad()
def classifier_features(model: FeatureClassifier, x: Tensor, chunk: int = 512) -> Tensor:
    """Penultimate features of ``x`` (float64, on the CPU), in eval mode."""
    was = model.training
    model.eval()
    try:
        p = next(model.parameters())
        return torch.cat([model.features(part.to(p.device, p.dtype)).double().cpu() for part in x.split(chunk)])
    finally:
        model.train(was)


def _to_model(images: Tensor, levels: int, generator: torch.Generator) -> Tensor:
    return (images.float() + torch.rand(images.shape, generator=generator)) / levels - 0.5


def train_feature_classifier(dataset: str, *, data_dir: Path, multiple: int = 1, epochs: int = 15,
                             batch_size: int = 128, features: int = 64, seed: int = 0,
                             device: torch.device | str = "cpu", download: bool = False
                             ) -> tuple[FeatureClassifier, dict[str, Any]]:
    """Train the classifier on ``dataset`` (images padded to a multiple of ``multiple``); returns it and its test
    accuracy and training time."""
    started = time.time()
    train = load_dataset(dataset, "train", data_dir=data_dir, download=download)
    test = load_dataset(dataset, "test", data_dir=data_dir, download=download)
    train_x, test_x = (pad_to_multiple(d.images, multiple) for d in (train, test))
    torch.manual_seed(seed)
    model = FeatureClassifier(train_x.shape[1:], train.num_classes, features).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(epochs):
        for index, idx in enumerate(epoch_batches(len(train), batch_size, seed, epoch)):
            g = make_generator(seed, epoch, index)
            x = _to_model(train_x[idx], train.levels, g).to(device)
            loss = F.cross_entropy(model(x), train.labels[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed + 1)
        logits = torch.cat([model(_to_model(part, test.levels, g).to(device)) for part in test_x.split(512)])
    accuracy = float((logits.argmax(1).cpu() == test.labels).double().mean())
    info = {"dataset": dataset, "test_accuracy": accuracy, "epochs": epochs, "features": features, "seed": seed,
            "shape": list(train_x.shape[1:]), "num_classes": train.num_classes, "seconds": time.time() - started}
    return model, info


def get_feature_classifier(dataset: str, *, data_dir: Path, cache: Path, multiple: int = 1, epochs: int = 15,
                           features: int = 64, seed: int = 0, device: torch.device | str = "cpu"
                           ) -> tuple[FeatureClassifier, dict[str, Any]]:
    """The classifier cached in the run folder ``cache`` if it was trained with these settings, else train it
    there."""
    wanted = {"dataset": dataset, "multiple": multiple, "epochs": epochs, "features": features, "seed": seed}
    config = cache / "config.json"
    model_file = cache / "checkpoints" / "model.pt"
    if config.is_file() and model_file.is_file():
        stored = json.loads(config.read_text())["args"]
        if all(stored.get(k) == v for k, v in wanted.items()):
            info = json.loads((cache / "metrics.json").read_text())
            model = FeatureClassifier(info["shape"], info["num_classes"], features)
            model.load_state_dict(load_checkpoint(model_file, map_location="cpu")["model"])
            return model.to(device).eval(), info
        _log.warning("feature classifier in %s was trained with other settings; training a new one there", cache)
    run = open_run(cache, wanted, overwrite=cache.exists())
    try:
        model, info = train_feature_classifier(dataset, data_dir=data_dir, multiple=multiple, epochs=epochs,
                                               features=features, seed=seed, device=device)
        run.update_metrics(**info)
        run.save_checkpoint("model", model=model.state_dict())
    finally:
        run.close()
    _log.info("feature classifier on %s: test accuracy %.4f (%.0f s)", dataset, info["test_accuracy"],
              info["seconds"])
    return model.eval(), info
