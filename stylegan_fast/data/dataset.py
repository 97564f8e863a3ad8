"""The training dataset: validated, resized images as uint8 [C, R, R] with one-hot labels."""

from __future__ import annotations

import logging
import os
import zipfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from stylegan_fast.data import demo, standard, transforms
from stylegan_fast.data import labels as _labels
from stylegan_fast.data.sources import IMAGE_EXTENSIONS, ArraySource, FolderSource, LmdbSource, ZipSource

DEFAULT_CACHE_BYTES = 1 << 30  # keep prepared images in memory up to 1 GiB (FFHQ at 64 px: 0.86 GB)
_SCAN_THREADS = min(8, os.cpu_count() or 1)  # PIL releases the GIL while decoding and resizing
_SUPPORTED = (
    "a folder of images, a .zip, a .npy / .npz array, CIFAR-10 (cifar-10-python.tar.gz or cifar-10-batches-py/), "
    "MNIST (train-images-idx3-ubyte[.gz] or its folder), an LMDB folder (data.mdb, as LSUN ships), "
    "or demo:faces / demo:textures"
)

logger = logging.getLogger(__name__)


class ImageDataset(torch.utils.data.Dataset):
    """Images of a source, checked once at construction and prepared for training.

    Every entry is decoded and prepared (crop, resize, channel conversion) once here. One
    that fails is logged as a warning with its path and the error, then skipped; a summary
    follows. When all prepared images fit in `cache_bytes` they are kept in memory and
    never decoded again; otherwise each item is decoded again when it is read.

    Item i is `(image, label)`: image uint8 [channels, resolution, resolution]; label float32
    one-hot [label_dim] ([0] when unlabelled). With `mirror`, items [n, 2n) are items
    [0, n) flipped left-right, so the length is 2n and every index means one fixed image.

    Attributes:
        name: what the dataset was opened from.
        num_images: number of good images n (before mirroring).
        image_names: the source's name of each good image (relative path, or array row).
        skipped: (path, error) of each image that could not be read.
        labels: int64 [n] class id of each good image, or None.
        label_dim: size of the one-hot label (0 when unlabelled).
        cached: whether the prepared images are held in memory.
    """

    def __init__(
        self,
        source,
        *,
        resolution: int,
        channels: int = 3,
        mirror: bool = False,
        labels: _labels.Labels | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ):
        self.name = source.location
        self.resolution = transforms.check_resolution(resolution)
        self.channels = transforms.check_channels(channels)
        self.mirror = bool(mirror)
        self._source = source
        total = len(source)
        if total == 0:
            looked_for = f" (looked for {', '.join(IMAGE_EXTENSIONS)})" if isinstance(source, (FolderSource, ZipSource)) else ""
            raise ValueError(f"spec {self.name!r}: no images found{looked_for}")
        self.cached = total * self.image_nbytes <= cache_bytes
        self._good, self._cache, self.skipped = self._scan()
        self.num_images = len(self._good)
        self.image_names = [source.names[i] for i in self._good]
        self.labels, self.label_dim = self._check_labels(labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.resolution, self.resolution)

    @property
    def image_nbytes(self) -> int:
        return self.channels * self.resolution * self.resolution

    def __len__(self) -> int:
        return self.num_images * (2 if self.mirror else 1)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        flip, row = divmod(index % len(self), self.num_images)
        pixels = self._cache[row] if self.cached else self._prepare(self._good[row])
        if flip:
            pixels = pixels[:, :, ::-1]
        return torch.from_numpy(pixels.copy()), self.label(row)

    def label(self, row: int) -> torch.Tensor:
        """One-hot float32 [label_dim] of good image `row` (no mirror offset); [0] if unlabelled."""
        onehot = torch.zeros(self.label_dim, dtype=torch.float32)
        if self.labels is not None:
            onehot[self.labels[row]] = 1
        return onehot

    def _prepare(self, entry: int) -> np.ndarray:
        try:
            return transforms.prepare_image(self._source.load(entry), self.resolution, self.channels)
        except Exception as error:
            raise RuntimeError(
                f"{self._source.describe(entry)} could not be read, though it was readable when the dataset opened: "
                f"{type(error).__name__}: {error}"
            ) from error

    def _scan(self):
        def attempt(entry):
            try:
                pixels = transforms.prepare_image(self._source.load(entry), self.resolution, self.channels)
                return (pixels if self.cached else None), None
            except Exception as error:  # Any failure of one file is that file's problem: report it.
                return None, error

        total = len(self._source)
        logger.info("%s: checking %d images", self.name, total)
        cache = np.empty((total, *self.image_shape), np.uint8) if self.cached else None
        good, skipped = [], []
        with ThreadPoolExecutor(_SCAN_THREADS) as pool:
            for entry, (pixels, error) in enumerate(pool.map(attempt, range(total))):
                if error is not None:
                    path, reason = self._source.describe(entry), f"{type(error).__name__}: {error}"
                    logger.warning("skipping unreadable image %s: %s", path, reason)
                    skipped.append((path, reason))
                    continue
                if cache is not None:
                    cache[len(good)] = pixels
                good.append(entry)
        if not good:
            raise ValueError(
                f"spec {self.name!r}: none of its {total} images could be read (first {skipped[0][0]}: {skipped[0][1]})"
            )
        if skipped:
            logger.warning(
                "%s: skipped %d of %d images that could not be read; %d remain",
                self.name,
                len(skipped),
                total,
                len(good),
            )
        return np.array(good, dtype=np.int64), (cache[: len(good)] if cache is not None else None), skipped

    def _check_labels(self, labels: _labels.Labels | None):
        if labels is None:
            return None, 0
        ids = labels.ids[self._good]
        missing = [self.image_names[row] for row in np.flatnonzero(ids == _labels.MISSING)]
        if missing:
            listed = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
            raise ValueError(f"labels file {labels.where} has no label for {len(missing)} of the images: {listed}")
        return ids, labels.dim


def open_dataset(
    spec: str | os.PathLike,
    resolution: int,
    channels: int = 3,
    mirror: bool = False,
    labels: str | os.PathLike | bool | None = None,
    *,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
) -> ImageDataset:
    """Open a dataset for training at `resolution` with `channels` channels.

    Args:
        spec: 'demo:faces', 'demo:textures', a folder of images (searched recursively for
            .png, .jpg, .jpeg, .webp, .bmp), a .zip of such images, a .npy / .npz uint8
            array (layouts in sources.py), or a benchmark as its publisher ships it
            (standard.py): CIFAR-10's cifar-10-python.tar.gz or its extracted folder,
            MNIST's idx files (their folder, or an images file), or an LMDB folder of
            encoded images such as an LSUN category (needs `pip install lmdb`).
        resolution: output side, a power of two >= 4; images are centre-cropped to a square
            and resized.
        channels: 3 (gray images are repeated) or 1 (colour images are converted to luma).
        mirror: add a left-right mirrored copy of every image (length doubles).
        labels: None uses the labels that come with the data if any (dataset.json at the
            folder / zip root, `labels` inside a .npz, the classes of CIFAR-10 and MNIST,
            texture ids for demo:textures);
            a path uses that labels file instead (format in labels.py); False ignores labels.
        cache_bytes: keep prepared images in memory when they fit in this many bytes.
    """
    _check_labels_choice(labels)
    source = open_source(spec)
    aligned = source_labels(source, labels)
    return ImageDataset(
        source, resolution=resolution, channels=channels, mirror=mirror, labels=aligned, cache_bytes=cache_bytes
    )


def _check_labels_choice(labels) -> None:
    if labels is not None and not isinstance(labels, (bool, str, os.PathLike)):
        raise TypeError(f"labels must be None, False or a path to a labels file, got {type(labels).__name__}")
    if labels is True:
        raise ValueError("labels must be None (use the data's own labels), False (none) or a path; True is ambiguous")


def source_labels(source, labels: str | os.PathLike | bool | None) -> _labels.Labels | None:
    """The labels of `source`'s entries, chosen by `labels` as `open_dataset` documents."""
    _check_labels_choice(labels)
    if labels is None:
        parsed, where = source.builtin_labels()
    elif labels is False:
        parsed, where = None, ""
    else:
        parsed, where = _read_labels_file(labels, source), os.fspath(labels)
    return _labels.align(parsed, source.names, where, by_row=source.labels_by_row)


def open_source(spec: str | os.PathLike):
    """The raw source `spec` names (see `open_dataset`): its entries, unprepared (sources.py).

    A folder is an LMDB database when it holds data.mdb, CIFAR-10 when it holds
    data_batch_1 and batches.meta, MNIST when it holds train-images-idx3-ubyte[.gz], and
    otherwise a folder of images. A file named *-images-idx3-ubyte[.gz] is MNIST; a .tar.gz
    or .tgz must be CIFAR-10's (members cifar-10-batches-py/data_batch_1..5).
    """
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"spec must be a str or a path, got {type(spec).__name__}")
    spec = os.fspath(spec)
    if spec.startswith("demo:"):
        return demo.open_demo(spec[len("demo:") :])
    if not os.path.exists(spec):
        raise FileNotFoundError(f"spec {spec!r}: no such file or folder (expected {_SUPPORTED})")
    if os.path.isdir(spec):
        if os.path.isfile(os.path.join(spec, "data.mdb")):
            return LmdbSource(spec)
        if standard.is_cifar10_folder(spec):
            return standard.open_cifar10_folder(spec)
        if standard.mnist_images_in(spec) is not None:
            return standard.open_mnist(spec)
        return FolderSource(spec)
    if standard.is_mnist_images_file(spec):
        return standard.open_mnist(spec)
    if standard.is_tarball(spec):
        source = standard.open_cifar10_tarball(spec)
        if source is None:
            raise ValueError(
                f"spec {spec!r}: a .tar.gz is read only as CIFAR-10 (cifar-10-python.tar.gz, members "
                f"{standard.CIFAR10_FOLDER}/data_batch_1..5), and this one is not; expected {_SUPPORTED} "
                "(extract other archives and give the folder)"
            )
        return source
    extension = os.path.splitext(spec)[1].lower()
    if extension == ".zip":
        try:
            return ZipSource(spec)
        except (OSError, zipfile.BadZipFile) as error:
            raise ValueError(f"spec {spec!r}: cannot read the zip file: {error}") from None
    if extension in (".npy", ".npz"):
        return ArraySource.from_file(spec)
    raise ValueError(f"spec {spec!r}: unsupported file type {extension or '(none)'}; expected {_SUPPORTED}")


def _read_labels_file(path, source) -> dict[str, int] | list[int] | None:
    if source.location.startswith("demo:"):
        raise ValueError(f"labels: the demo datasets carry their own labels; got a labels file {os.fspath(path)!r}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"labels: no such file {os.fspath(path)!r}")
    with open(path, "rb") as file:
        return _labels.parse(file.read(), os.fspath(path))
