"""Data loaders read small files written here in the real formats, and say clearly what is missing or wrong."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from experiments.common import data
from experiments.common.data import DataFormatError, DatasetNotFound, DownloadFailed, load_dataset, read_idx

RNG = np.random.default_rng(1234)

_IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B,
              np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}


def write_idx(path: Path, array: np.ndarray, gz: bool = True) -> Path:
    """Write an idx file the way the MNIST files are laid out: magic, big-endian dims, big-endian data."""
    header = bytes([0, 0, _IDX_CODES[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def write_mnist_layout(folder: Path, n_train: int = 7, n_test: int = 5, gz: bool = True) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    suffix = ".gz" if gz else ""
    for split, n, prefix in (("train", n_train, "train"), ("test", n_test, "t10k")):
        images = RNG.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = RNG.integers(0, 10, n).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz)
        arrays[split] = (images, labels)
    return arrays


class _Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes bytes as Python 2 ``str`` (BINSTRING), as in the original CIFAR batches made with cPickle."""

    dispatch = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]

    def save_py2_str(self, obj: bytes) -> None:
        self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def write_cifar_batch(path: Path, images: np.ndarray, labels: list[int], style: str = "py2") -> None:
    """Write a CIFAR-10 python batch: {'batch_label', 'labels', 'data' (N, 3072) uint8, 'filenames'}."""
    record = {b"batch_label": b"training batch 1 of 5", b"labels": labels,
              b"data": images.reshape(len(images), -1), b"filenames": [b"img_%d.png" % i for i in range(len(labels))]}
    buffer = io.BytesIO()
    if style == "py2":
        _Py2Pickler(buffer, protocol=2).dump(record)
        # Python 2 era numpy named its module numpy.core (GLOBAL names are newline-terminated, so this is exact).
        buffer = io.BytesIO(buffer.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n"))
    else:
        pickle.dump({k.decode(): v for k, v in record.items()}, buffer, protocol=4)
    path.write_bytes(buffer.getvalue())


def write_cifar_folder(folder: Path, n: int = 3) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, list] = {"train": [], "test": []}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        images = RNG.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        labels = RNG.integers(0, 10, n).tolist()
        write_cifar_batch(folder / name, images, labels, style="py2" if i % 2 == 0 else "py3")
        out["test" if name == "test_batch" else "train"].append((images, np.array(labels)))
    return {k: (np.concatenate([a for a, _ in v]), np.concatenate([b for _, b in v])) for k, v in out.items()}


@pytest.fixture(autouse=True)
def no_system_dirs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep installed data sets (e.g. Debian's Fashion-MNIST) out of these tests."""
    monkeypatch.setattr(data.sources, "SYSTEM_DIRS", {"fashion-mnist": [tmp_path / "system"]})


# ----------------------------------------------------------------------------------------------------------------
def test_read_idx_all_types_gzipped_or_not(tmp_path: Path) -> None:
    for dtype in _IDX_CODES:
        array = (RNG.standard_normal((3, 4, 2)) * 50).astype(dtype)
        for gz in (True, False):
            out = read_idx(write_idx(tmp_path / f"a_{dtype}_{gz}", array, gz))
            assert out.dtype == dtype and out.dtype.isnative
            np.testing.assert_array_equal(out, array)


def test_read_idx_rejects_bad_magic_and_truncation(tmp_path: Path) -> None:
    (tmp_path / "bad").write_bytes(b"\x12\x34\x08\x01" + b"\x00" * 8)
    with pytest.raises(DataFormatError, match=r"bad is not an idx file.*12 34 08 01"):
        read_idx(tmp_path / "bad")
    raw = gzip.decompress(write_idx(tmp_path / "ok", np.zeros((4, 28, 28), np.uint8)).read_bytes())
    (tmp_path / "short").write_bytes(raw[:-10])
    with pytest.raises(DataFormatError, match=r"shape \(4, 28, 28\).*3126 bytes \(truncated\)"):
        read_idx(tmp_path / "short")
    (tmp_path / "badgz").write_bytes(gzip.compress(raw)[:30])
    with pytest.raises(DataFormatError, match="damaged gzip"):
        read_idx(tmp_path / "badgz")


@pytest.mark.parametrize("layout,gz", [("fashion-mnist", True), ("FashionMNIST/raw", False), (".", True)])
def test_fashion_mnist_from_data_dir_layouts(tmp_path: Path, layout: str, gz: bool) -> None:
    arrays = write_mnist_layout(tmp_path / "d" / layout, gz=gz)
    for split in ("train", "test"):
        ds = load_dataset("fashion-mnist", split, data_dir=tmp_path / "d")
        images, labels = arrays[split]
        assert ds.images.dtype == torch.uint8 and ds.labels.dtype == torch.int64
        assert torch.equal(ds.images, torch.from_numpy(images)[:, None])
        assert torch.equal(ds.labels, torch.from_numpy(labels.astype(np.int64)))
        assert (ds.name, ds.split, ds.num_classes, ds.levels, ds.shape) == ("fashion-mnist", split, 10, 256,
                                                                            (1, 28, 28))
        assert ds.class_names[9] == "Ankle boot"


def test_the_folders_torchvision_downloads_into_are_read_as_they_are(tmp_path: Path) -> None:
    """A --data-dir filled by torchvision's datasets (root/MNIST/raw with unpacked idx files, root/SVHN/*.mat,
    root/cifar-10-batches-py) works without torchvision."""
    mnist = write_mnist_layout(tmp_path / "MNIST" / "raw", gz=False)
    assert torch.equal(load_dataset("mnist", "test", data_dir=tmp_path).images[:, 0],
                       torch.from_numpy(mnist["test"][0]))
    (tmp_path / "SVHN").mkdir()
    x = RNG.integers(0, 256, (32, 32, 3, 2), dtype=np.uint8)
    scipy.io.savemat(tmp_path / "SVHN" / "train_32x32.mat", {"X": x, "y": np.array([[3], [10]])})
    assert load_dataset("svhn", "train", data_dir=tmp_path).labels.tolist() == [3, 0]
    cifar = write_cifar_folder(tmp_path / "cifar-10-batches-py")
    assert torch.equal(load_dataset("cifar10", "test", data_dir=tmp_path).images, torch.from_numpy(cifar["test"][0]))
    with pytest.raises(DatasetNotFound):  # negative control: the files in a folder no layout names
        write_mnist_layout(tmp_path / "elsewhere" / "mnist_files")
        load_dataset("fashion-mnist", "test", data_dir=tmp_path / "elsewhere")


def test_fashion_mnist_from_system_folder(tmp_path: Path) -> None:
    arrays = write_mnist_layout(tmp_path / "system")
    ds = load_dataset("fashion_mnist", "test", data_dir=tmp_path / "empty")
    assert ds.source == str(tmp_path / "system")
    assert torch.equal(ds.images[:, 0], torch.from_numpy(arrays["test"][0]))


def test_mnist_idx_with_mismatched_counts_is_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "mnist"
    write_mnist_layout(folder)
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(3, np.uint8))
    with pytest.raises(DataFormatError, match="expected 7 labels"):
        load_dataset("mnist", data_dir=tmp_path)


def test_missing_fashion_mnist_lists_every_place_and_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFound) as info:
        load_dataset("fashion-mnist", "train", data_dir=tmp_path / "d")
    message = str(info.value)
    for place in (tmp_path / "d", tmp_path / "d" / "fashion-mnist", tmp_path / "d" / "FashionMNIST" / "raw",
                  tmp_path / "system"):
        assert f"{place}/{{train-images-idx3-ubyte" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert isinstance(info.value, FileNotFoundError)


def test_download_offline_fails_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(url, timeout=None):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(data.sources.urllib.request, "urlopen", offline)
    with pytest.raises(DownloadFailed) as info:
        load_dataset("mnist", "train", data_dir=tmp_path, download=True)
    message = str(info.value)
    assert "could not download train-images-idx3-ubyte.gz" in message
    assert "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz" in message
    assert "Name or service not known" in message and "How to get it" in message
    assert not (tmp_path / "mnist").exists()  # no partial files or empty folders left behind


def test_download_fetches_into_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arrays = write_mnist_layout(tmp_path / "mirror")
    monkeypatch.setitem(data.sources.MIRRORS, "fashion-mnist", [(tmp_path / "mirror").as_uri() + "/"])
    ds = load_dataset("fashion-mnist", "train", data_dir=tmp_path / "d", download=True)
    assert (tmp_path / "d" / "fashion-mnist" / "train-images-idx3-ubyte.gz").is_file()
    assert torch.equal(ds.images[:, 0], torch.from_numpy(arrays["train"][0]))


# ----------------------------------------------------------------------------------------------------------------
def test_cifar_batches_read_back_exactly(tmp_path: Path) -> None:
    arrays = write_cifar_folder(tmp_path / "cifar10" / "cifar-10-batches-py")
    for split in ("train", "test"):
        ds = load_dataset("cifar10", split, data_dir=tmp_path)
        assert torch.equal(ds.images, torch.from_numpy(arrays[split][0]))
        assert torch.equal(ds.labels, torch.from_numpy(arrays[split][1]))
        assert (ds.num_classes, ds.levels, ds.shape, len(ds)) == (10, 256, (3, 32, 32), 15 if split == "train" else 3)


def test_cifar_row_layout_is_red_green_blue_planes(tmp_path: Path) -> None:
    row = np.concatenate([np.full(1024, 10), np.full(1024, 20), np.arange(1024) % 256]).astype(np.uint8)
    write_cifar_batch(tmp_path / "b", row[None], [3])
    images, labels = data.read_cifar_batch(tmp_path / "b")
    assert images.shape == (1, 3, 32, 32) and labels.tolist() == [3]
    assert (images[0, 0] == 10).all() and (images[0, 1] == 20).all()
    assert images[0, 2, 1, 0] == 32 and images[0, 2, 0, 5] == 5  # row-major 32x32 plane


def test_cifar_archive_is_extracted_from_a_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arrays = write_cifar_folder(tmp_path / "src" / "cifar-10-batches-py", n=2)
    (tmp_path / "mirror").mkdir()
    with tarfile.open(tmp_path / "mirror" / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    monkeypatch.setitem(data.sources.MIRRORS, "cifar10", [(tmp_path / "mirror").as_uri() + "/"])
    with pytest.raises(DatasetNotFound, match=r"cifar-10-python\.tar\.gz"):
        load_dataset("cifar10", "test", data_dir=tmp_path / "d")
    ds = load_dataset("cifar10", "test", data_dir=tmp_path / "d", download=True)
    assert torch.equal(ds.images, torch.from_numpy(arrays["test"][0]))
    assert (tmp_path / "d" / "cifar10" / "cifar-10-batches-py" / "data_batch_5").is_file()


class _Evil:
    def __reduce__(self):
        return (Path.mkdir, (_Evil.target,))

    target = Path("/nonexistent")


def test_cifar_loader_refuses_code_in_pickles(tmp_path: Path) -> None:
    _Evil.target = tmp_path / "pwned"
    (tmp_path / "b").write_bytes(pickle.dumps({"data": _Evil(), "labels": [1]}))
    with pytest.raises(DataFormatError, match=r"refusing to unpickle pathlib.*Path"):
        data.read_cifar_batch(tmp_path / "b")
    assert not _Evil.target.exists()


def test_cifar_wrong_contents_and_missing_batches(tmp_path: Path) -> None:
    (tmp_path / "b").write_bytes(pickle.dumps({"data": np.zeros((2, 10), np.uint8), "labels": [1, 2]}))
    with pytest.raises(DataFormatError, match=r"uint8 of shape \(N, 3072\)"):
        data.read_cifar_batch(tmp_path / "b")
    (tmp_path / "c").write_bytes(b"garbage")
    with pytest.raises(DataFormatError, match="not a readable CIFAR batch"):
        data.read_cifar_batch(tmp_path / "c")
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_folder(folder)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DatasetNotFound, match="lacks data_batch_3"):
        load_dataset("cifar10", "train", data_dir=tmp_path)


# ----------------------------------------------------------------------------------------------------------------
def test_svhn_mat_read_back_with_label_ten_as_zero(tmp_path: Path) -> None:
    (tmp_path / "svhn").mkdir()
    x = RNG.integers(0, 256, (32, 32, 3, 6), dtype=np.uint8)
    y = np.array([[1], [10], [5], [10], [9], [2]], dtype=np.uint8)
    scipy.io.savemat(tmp_path / "svhn" / "test_32x32.mat", {"X": x, "y": y})
    ds = load_dataset("svhn", "test", data_dir=tmp_path)
    assert ds.labels.tolist() == [1, 0, 5, 0, 9, 2]
    assert ds.images.shape == (6, 3, 32, 32)
    assert ds.images[4, 2, 7, 3] == x[7, 3, 2, 4]  # (H, W, C, N) -> (N, C, H, W)
    with pytest.raises(DatasetNotFound, match=r"svhn/train_32x32\.mat"):
        load_dataset("svhn", "train", data_dir=tmp_path)


def test_svhn_bad_files(tmp_path: Path) -> None:
    scipy.io.savemat(tmp_path / "a.mat", {"images": np.zeros((2, 2))})
    with pytest.raises(DataFormatError, match=r"variables 'X' and 'y', found \['images'\]"):
        data.read_svhn_mat(tmp_path / "a.mat")
    scipy.io.savemat(tmp_path / "b.mat", {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[0], [3]])})
    with pytest.raises(DataFormatError, match=r"labels run 1\.\.10"):
        data.read_svhn_mat(tmp_path / "b.mat")
    (tmp_path / "c.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(DataFormatError, match="c.mat"):
        data.read_svhn_mat(tmp_path / "c.mat")


# ----------------------------------------------------------------------------------------------------------------
def test_digits_fixed_split() -> None:
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert (len(train), len(test)) == (1438, 359)
    assert train.shape == (1, 8, 8) and train.levels == 17 and int(train.images.max()) == 16
    from sklearn.datasets import load_digits

    everything = load_digits()
    pairs = {(tuple(im.ravel().astype(int)), int(t)) for im, t in zip(everything.images, everything.target)}
    ours = [(tuple(im.ravel().tolist()), int(t)) for d in (train, test) for im, t in zip(d.images, d.labels)]
    assert len(ours) == 1797 and set(ours) == pairs
    again = load_dataset("digits", "test")
    assert torch.equal(again.images, test.images) and torch.equal(again.labels, test.labels)
    assert set(test.labels.tolist()) == set(range(10))


def test_unknown_names_are_errors() -> None:
    with pytest.raises(ValueError, match="unknown data set 'imagenet'; choose one of digits"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="unknown split 'val'"):
        load_dataset("digits", "val")


def test_image_data_checks_and_subset() -> None:
    ds = load_dataset("digits", "test")
    sub = ds.subset(torch.tensor([3, 1]))
    assert len(sub) == 2 and torch.equal(sub.images[1], ds.images[1]) and sub.levels == 17
    with pytest.raises(ValueError, match="uint8"):
        data.ImageData(ds.images.float(), ds.labels, "x", "train", 10, 17, "here")
