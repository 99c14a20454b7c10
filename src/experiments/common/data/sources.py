"""Image data sets: where each one is looked for, how it is read, and what it holds.

``load_dataset(name, split)`` returns an :class:`ImageData` with uint8 images (N, C, H, W), int64 labels and
metadata. Sets other than the embedded ``digits`` are looked up in ``data_dir`` (several usual layouts), then in
system locations (the Debian ``dataset-fashion-mnist`` package), then downloaded if ``download=True``. When a set
cannot be found, :class:`DatasetNotFound` lists every place it looked and how to get the files.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .formats import DataFormatError, read_cifar_batch, read_idx, read_svhn_mat

__all__ = [
    "ImageData",
    "DatasetNotFound",
    "DownloadFailed",
    "DATASETS",
    "SYSTEM_DIRS",
    "MIRRORS",
    "DEFAULT_DATA_DIR",
    "dataset_names",
    "load_dataset",
]

_log = logging.getLogger(__name__)

DEFAULT_DATA_DIR = Path("data")
SPLITS = ("train", "test")
DIGITS_TEST_SIZE = 359
DIGITS_SPLIT_SEED = 0

#: System folders searched after ``data_dir`` (module-level so tests and users can change them).
SYSTEM_DIRS: dict[str, list[Path]] = {
    "fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")],
    "mnist": [],
    "cifar10": [],
    "svhn": [],
}

#: Official download locations, tried in order when ``download=True``.
MIRRORS: dict[str, list[str]] = {
    "fashion-mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
    "mnist": ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"],
    "cifar10": ["https://www.cs.toronto.edu/~kriz/"],
    "svhn": ["http://ufldl.stanford.edu/housenumbers/"],
}

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
_CIFAR_FOLDER = "cifar-10-batches-py"
_CIFAR_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
DIGIT_CLASSES = tuple(str(d) for d in range(10))


class DatasetNotFound(FileNotFoundError):
    """A data set's files were not found anywhere the loader looked."""


class DownloadFailed(DatasetNotFound):
    """``download=True`` was given but fetching the files failed (for example, the machine is offline)."""


@dataclass(frozen=True, eq=False)
class ImageData:
    """One split of an image data set: uint8 images (N, C, H, W), int64 labels (N,) and metadata."""

    images: torch.Tensor
    labels: torch.Tensor
    name: str
    split: str
    num_classes: int
    levels: int  # number of discrete values a pixel takes: 17 for sklearn digits (0..16), 256 for 8-bit sets
    source: str  # where the data was read from
    class_names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels must be int64 of shape ({self.images.shape[0]},), got "
                             f"{self.labels.dtype} {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape (C, H, W) of one image."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def subset(self, indices: torch.Tensor | slice) -> "ImageData":
        """Return the examples at ``indices`` with the same metadata."""
        return ImageData(self.images[indices], self.labels[indices], self.name, self.split, self.num_classes,
                         self.levels, self.source, self.class_names)


@dataclass(frozen=True)
class DatasetSpec:
    """How to load one data set and how a user gets its files."""

    name: str
    num_classes: int
    levels: int
    shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    reader: Callable[[str, Path, bool], tuple[np.ndarray, np.ndarray, str]]
    how_to_get: str


# ----------------------------------------------------------------------------------------------------------------
# Search helpers
# ----------------------------------------------------------------------------------------------------------------
def _candidates(name: str, data_dir: Path, subfolders: tuple[str, ...]) -> list[Path]:
    """Folders to search for ``name``: data_dir and its usual subfolders, then system folders."""
    folders = [data_dir] + [data_dir / sub for sub in subfolders] + list(SYSTEM_DIRS.get(name, []))
    unique: list[Path] = []
    for folder in folders:
        if folder not in unique:
            unique.append(folder)
    return unique


def _not_found(name: str, split: str, looked: list[str]) -> DatasetNotFound:
    """Build the error that lists every place searched and how to get the files."""
    where = "\n".join(f"  - {item}" for item in looked)
    return DatasetNotFound(
        f"data set {name!r} ({split} split) not found. Looked in:\n{where}\n"
        f"How to get it: {DATASETS[name].how_to_get}"
    )


def _fetch(url: str, dest: Path) -> None:
    """Download ``url`` to ``dest`` atomically."""
    tmp = dest.with_name(f".{dest.name}.part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as handle:  # noqa: S310
            shutil.copyfileobj(response, handle)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _download(name: str, files: list[str], dest: Path) -> None:
    """Fetch ``files`` of data set ``name`` from its mirrors into ``dest``; raise DownloadFailed with reasons."""
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    for filename in files:
        if (dest / filename).exists():
            continue
        errors = []
        for base in MIRRORS[name]:
            url = base + filename
            try:
                _log.info("downloading %s to %s", url, dest)
                _fetch(url, dest / filename)
                break
            except (urllib.error.URLError, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", exc)
                errors.append(f"  - {url}: {reason}")
        else:
            if created and not any(dest.iterdir()):
                dest.rmdir()
            raise DownloadFailed(
                f"could not download {filename} of data set {name!r}:\n" + "\n".join(errors)
                + "\nThe machine may be offline or the server unreachable. "
                f"How to get it: {DATASETS[name].how_to_get}"
            )


# ----------------------------------------------------------------------------------------------------------------
# Readers: (split, data_dir, download) -> (images, labels, source)
# ----------------------------------------------------------------------------------------------------------------
def _find_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _idx_reader(name: str, subfolders: tuple[str, ...]) -> Callable[[str, Path, bool], tuple]:
    """Make the reader of an idx data set (MNIST layout) searched under ``subfolders`` of the data folder."""

    def read(split: str, data_dir: Path, download: bool) -> tuple[np.ndarray, np.ndarray, str]:
        image_stem, label_stem = _IDX_FILES[split]
        looked = []
        for folder in _candidates(name, data_dir, subfolders):
            image_path, label_path = _find_file(folder, image_stem), _find_file(folder, label_stem)
            if image_path and label_path:
                return (*_read_idx_pair(image_path, label_path), str(folder))
            looked.append(f"{folder}/{{{image_stem},{label_stem}}}[.gz]")
        if not download:
            raise _not_found(name, split, looked)
        dest = data_dir / name
        _download(name, [f"{image_stem}.gz", f"{label_stem}.gz"], dest)
        return (*_read_idx_pair(dest / f"{image_stem}.gz", dest / f"{label_stem}.gz"), str(dest))

    return read


def _read_idx_pair(image_path: Path, label_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataFormatError(f"{image_path}: expected uint8 images (N, H, W), found {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataFormatError(f"{label_path}: expected {images.shape[0]} labels, found shape {labels.shape}")
    return images[:, None], labels.astype(np.int64)


def _cifar_folder(data_dir: Path, looked: list[str]) -> Path | None:
    """Find an extracted cifar-10-batches-py folder, extracting a downloaded archive if one is lying there."""
    for folder in _candidates("cifar10", data_dir, ("cifar10", "cifar-10", "CIFAR10")):
        for batches in (folder / _CIFAR_FOLDER, folder):
            if (batches / "data_batch_1").is_file() or (batches / "test_batch").is_file():
                return batches
        looked.append(f"{folder}/{_CIFAR_FOLDER}/ (data_batch_1..5, test_batch) or {folder}/{_CIFAR_ARCHIVE}")
        if (folder / _CIFAR_ARCHIVE).is_file():
            _extract_cifar(folder / _CIFAR_ARCHIVE, folder)
            return folder / _CIFAR_FOLDER
    return None


def _extract_cifar(archive: Path, dest: Path) -> None:
    """Extract the CIFAR-10 archive's batch folder, refusing members outside it."""
    _log.info("extracting %s", archive)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(f"{_CIFAR_FOLDER}/") and m.isfile()]
            for member in members:
                if ".." in Path(member.name).parts:
                    raise DataFormatError(f"{archive}: unsafe member name {member.name!r}")
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, members=members, filter="data")
            else:  # python without extraction filters: members were checked above
                tar.extractall(dest, members=members)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataFormatError(f"{archive}: not a readable CIFAR-10 archive ({exc})") from exc


def _read_cifar10(split: str, data_dir: Path, download: bool) -> tuple[np.ndarray, np.ndarray, str]:
    looked: list[str] = []
    folder = _cifar_folder(data_dir, looked)
    if folder is None:
        if not download:
            raise _not_found("cifar10", split, looked)
        dest = data_dir / "cifar10"
        _download("cifar10", [_CIFAR_ARCHIVE], dest)
        _extract_cifar(dest / _CIFAR_ARCHIVE, dest)
        folder = dest / _CIFAR_FOLDER
    missing = [f for f in _CIFAR_FILES[split] if not (folder / f).is_file()]
    if missing:
        raise DatasetNotFound(f"data set 'cifar10' ({split} split): {folder} lacks {', '.join(missing)}. "
                              f"How to get it: {DATASETS['cifar10'].how_to_get}")
    parts = [read_cifar_batch(folder / f) for f in _CIFAR_FILES[split]]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), str(folder)


def _read_svhn(split: str, data_dir: Path, download: bool) -> tuple[np.ndarray, np.ndarray, str]:
    filename = f"{split}_32x32.mat"
    looked = []
    for folder in _candidates("svhn", data_dir, ("svhn", "SVHN")):
        if (folder / filename).is_file():
            images, labels = read_svhn_mat(folder / filename)
            return images, labels, str(folder / filename)
        looked.append(str(folder / filename))
    if not download:
        raise _not_found("svhn", split, looked)
    dest = data_dir / "svhn"
    _download("svhn", [filename], dest)
    images, labels = read_svhn_mat(dest / filename)
    return images, labels, str(dest / filename)


def _digits_arrays() -> tuple[np.ndarray, np.ndarray, str]:
    """sklearn's digits as uint8 (N, 8, 8) and int64 labels.

    Reads the CSV embedded in scikit-learn directly (``import sklearn.datasets`` alone takes seconds); falls
    back to ``load_digits()`` if the file is not where scikit-learn keeps it.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            table = np.loadtxt(path, delimiter=",", dtype=np.int64)
            if table.shape == (1797, 65) and table[:, :64].min() >= 0 and table[:, :64].max() <= 16:
                return table[:, :64].reshape(-1, 8, 8).astype(np.uint8), table[:, 64], str(path)
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise DatasetNotFound("data set 'digits' needs scikit-learn: pip install scikit-learn") from exc
    bunch = load_digits()
    return bunch.images.astype(np.uint8), bunch.target.astype(np.int64), "sklearn.datasets.load_digits"


def _read_digits(split: str, data_dir: Path, download: bool) -> tuple[np.ndarray, np.ndarray, str]:
    images, labels, source = _digits_arrays()
    images = images[:, None]  # values 0..16
    order = np.random.RandomState(DIGITS_SPLIT_SEED).permutation(len(labels))
    chosen = order[:DIGITS_TEST_SIZE] if split == "test" else order[DIGITS_TEST_SIZE:]
    chosen = np.sort(chosen)
    return images[chosen], labels[chosen], source


def _resized_reader(name: str, side: int) -> Callable[[str, Path, bool], tuple]:
    """The reader of ``name`` with every image resized to ``side x side`` (bilinear with antialiasing, rounded back
    to 8-bit levels): a smaller copy of a real data set for CPU budgets."""

    def read(split: str, data_dir: Path, download: bool) -> tuple[np.ndarray, np.ndarray, str]:
        from .transforms import resize_images

        images, labels, source = DATASETS[name].reader(split, data_dir, download)
        small = resize_images(torch.from_numpy(np.ascontiguousarray(images)), side)
        return small.numpy(), labels, f"{source} (resized to {side}x{side})"

    return read


DATASETS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec(
        "digits", 10, 17, (1, 8, 8), DIGIT_CLASSES, _read_digits,
        "embedded in scikit-learn (pip install scikit-learn)",
    ),
    "fashion-mnist": DatasetSpec(
        "fashion-mnist", 10, 256, (1, 28, 28), FASHION_CLASSES,
        _idx_reader("fashion-mnist", ("fashion-mnist", "fashion_mnist", "FashionMNIST/raw")),
        "`apt-get install dataset-fashion-mnist` (files land in /usr/share/datasets/fashion-mnist/), or put "
        "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
        "t10k-labels-idx1-ubyte.gz from https://github.com/zalandoresearch/fashion-mnist into "
        "<data-dir>/fashion-mnist/, or pass --download on a machine with internet access",
    ),
    "fashion-mnist-16": DatasetSpec(
        "fashion-mnist-16", 10, 256, (1, 16, 16), FASHION_CLASSES, _resized_reader("fashion-mnist", 16),
        "Fashion-MNIST resized to 16x16 when loaded: get Fashion-MNIST (see fashion-mnist)",
    ),
    "mnist": DatasetSpec(
        "mnist", 10, 256, (1, 28, 28), DIGIT_CLASSES, _idx_reader("mnist", ("mnist", "MNIST/raw")),
        "put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
        "t10k-labels-idx1-ubyte.gz (http://yann.lecun.com/exdb/mnist/) into <data-dir>/mnist/, or pass "
        "--download on a machine with internet access",
    ),
    "cifar10": DatasetSpec(
        "cifar10", 10, 256, (3, 32, 32), CIFAR10_CLASSES, _read_cifar10,
        "download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz and extract it so that "
        "<data-dir>/cifar10/cifar-10-batches-py/ holds data_batch_1..5 and test_batch (or leave the .tar.gz in "
        "<data-dir>/cifar10/), or pass --download on a machine with internet access",
    ),
    "svhn": DatasetSpec(
        "svhn", 10, 256, (3, 32, 32), DIGIT_CLASSES, _read_svhn,
        "download train_32x32.mat and test_32x32.mat from http://ufldl.stanford.edu/housenumbers/ into "
        "<data-dir>/svhn/, or pass --download on a machine with internet access",
    ),
}


def dataset_names() -> list[str]:
    """Names accepted by :func:`load_dataset`."""
    return list(DATASETS)


def load_dataset(
    name: str, split: str = "train", *, data_dir: str | os.PathLike[str] | None = None, download: bool = False
) -> ImageData:
    """Load one split (``"train"`` or ``"test"``) of data set ``name`` as uint8 images and int64 labels."""
    key = name.lower().replace("_", "-")
    key = {"fashionmnist": "fashion-mnist", "cifar-10": "cifar10"}.get(key, key)
    if key not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose 'train' or 'test'")
    spec = DATASETS[key]
    folder = Path(data_dir) if data_dir is not None else DEFAULT_DATA_DIR
    images, labels, source = spec.reader(split, folder, download)
    if images.shape[1:] != spec.shape:
        raise DataFormatError(f"{source}: {key} images should have shape {spec.shape}, found {images.shape[1:]}")
    if labels.size and (labels.min() < 0 or labels.max() >= spec.num_classes):
        raise DataFormatError(f"{source}: labels should lie in 0..{spec.num_classes - 1}, "
                              f"found {labels.min()}..{labels.max()}")
    return ImageData(torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels), key, split,
                     spec.num_classes, spec.levels, source, spec.class_names)
