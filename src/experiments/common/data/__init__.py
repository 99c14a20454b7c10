"""Data sets for the studies: loaders for the real file formats, deterministic batches, transforms.

Example::

    >>> from experiments.common.data import load_dataset, epoch_batches, to_float
    >>> train = load_dataset("digits", "train")
    >>> train.images.shape, train.levels
    (torch.Size([1438, 1, 8, 8]), 17)
    >>> idx = next(epoch_batches(len(train), 64, seed=0, epoch=0))
    >>> x = to_float(train.images[idx], train.levels)
"""

from .batches import derive_seed, epoch_batches, epoch_permutation, make_generator, shard, steps_per_epoch
from .formats import DataFormatError, read_cifar_batch, read_idx, read_svhn_mat
from .sources import (
    DATASETS,
    DEFAULT_DATA_DIR,
    MIRRORS,
    SYSTEM_DIRS,
    DatasetNotFound,
    DownloadFailed,
    ImageData,
    dataset_names,
    load_dataset,
)
from .transforms import (
    augment,
    dequantize,
    normalize,
    pad_images,
    pad_to_multiple,
    random_crop,
    random_hflip,
    resize_images,
    to_float,
)

__all__ = [
    "DATASETS",
    "DEFAULT_DATA_DIR",
    "MIRRORS",
    "SYSTEM_DIRS",
    "DataFormatError",
    "DatasetNotFound",
    "DownloadFailed",
    "ImageData",
    "augment",
    "dataset_names",
    "derive_seed",
    "dequantize",
    "epoch_batches",
    "epoch_permutation",
    "load_dataset",
    "make_generator",
    "normalize",
    "pad_images",
    "pad_to_multiple",
    "random_crop",
    "random_hflip",
    "read_cifar_batch",
    "read_idx",
    "read_svhn_mat",
    "resize_images",
    "shard",
    "steps_per_epoch",
    "to_float",
]
