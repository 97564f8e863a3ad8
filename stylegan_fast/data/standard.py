"""Benchmark datasets in the files their publishers distribute: CIFAR-10 and MNIST.

CIFAR-10 (python version): `cifar-10-python.tar.gz` as downloaded (its members are read
from the archive; nothing is extracted to disk) or the extracted folder
`cifar-10-batches-py`. The 50,000 training images of data_batch_1..5, in that order, with
their class ids 0-9. Each batch is a Python 2 pickle of

    {'data': uint8 array [N, 3072], 'labels': [N class ids], 'batch_label': ..., 'filenames': ...}

where a row of 'data' is a 32x32 image as its 1024 red, then 1024 green, then 1024 blue
values, row-major. The batches are read with `compat.safe_pickle`, which admits plain data
and numeric numpy arrays only: no general unpickler ever sees them.

MNIST (and Fashion-MNIST, which ships the same files): a folder holding
train-images-idx3-ubyte and train-labels-idx1-ubyte (gzipped or not), or the path of an
images file (e.g. t10k-images-idx3-ubyte.gz for the test set) whose labels are read from
the labels file beside it. IDX is big-endian: images are the magic 0x00000803, the count,
rows and columns as int32, then the uint8 pixels; labels the magic 0x00000801, the count,
then one uint8 each. 28x28 digits are padded with 2 zero pixels on each side to 32x32, as
the StyleGAN2-ADA dataset tool does, so that the side is a power of two; one channel.

Both are held in memory as an ArraySource (sources.py), labelled by row. LSUN's LMDB
folders are read by sources.LmdbSource.
"""

from __future__ import annotations

import gzip
import os
import re
import struct
import tarfile
import zlib

import numpy as np
import torch

from stylegan_fast.compat import safe_pickle
from stylegan_fast.data import labels as _labels
from stylegan_fast.data.sources import ArraySource

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_BATCHES = tuple(f"data_batch_{number}" for number in range(1, 6))
CIFAR10_META = "batches.meta"
_CIFAR10_SIDE = 32
_CIFAR10_CLASSES = 10
_TARBALL_EXTENSIONS = (".tar.gz", ".tgz")  # matched case-insensitively

MNIST_TRAIN_IMAGES = "train-images-idx3-ubyte"
# Publishers write '-images-idx3'; some mirrors '-images.idx3'. The labels file sits beside it.
_MNIST_IMAGES_NAME = re.compile(r"(?P<prefix>.+)-images(?P<dot>[-.])idx3-ubyte(?P<gz>\.gz)?")
_IDX_IMAGES_MAGIC = 0x00000803
_IDX_LABELS_MAGIC = 0x00000801
_MNIST_SIDE = 28
_MNIST_PAD = 2  # 28 + 2 * 2 = 32
_GZIP_MAGIC = b"\x1f\x8b"


def is_cifar10_folder(path: str) -> bool:
    """Whether the folder `path` is an extracted CIFAR-10 (python version)."""
    return all(os.path.isfile(os.path.join(path, name)) for name in (CIFAR10_BATCHES[0], CIFAR10_META))


def is_tarball(path: str) -> bool:
    return path.lower().endswith(_TARBALL_EXTENSIONS)


def mnist_images_in(folder: str) -> str | None:
    """The MNIST training images file in `folder` (gzipped or not), or None."""
    for name in (f"{MNIST_TRAIN_IMAGES}.gz", MNIST_TRAIN_IMAGES):
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return None


def is_mnist_images_file(path: str) -> bool:
    """Whether `path` is named as an MNIST images file (`*-images-idx3-ubyte[.gz]`)."""
    return _MNIST_IMAGES_NAME.fullmatch(os.path.basename(path)) is not None


def open_cifar10_folder(path: str) -> ArraySource:
    """The training images and labels of an extracted CIFAR-10 folder."""
    batches = []
    for name in CIFAR10_BATCHES:
        file_path = os.path.join(path, name)
        if not os.path.isfile(file_path):
            raise ValueError(f"spec {path!r}: the CIFAR-10 folder has no {name} (it needs data_batch_1..5)")
        try:
            with open(file_path, "rb") as file:
                batches.append(_cifar10_batch(file, file_path))
        except OSError as error:
            raise ValueError(f"spec {path!r}: cannot read {file_path}: {error}") from None
    return _cifar10_source(batches, path)


def open_cifar10_tarball(path: str) -> ArraySource | None:
    """The training images and labels of `cifar-10-python.tar.gz`; None if the archive is not CIFAR-10.

    The archive is read once, front to back, stopping after the last training batch; it is
    judged not to be CIFAR-10 at its first member outside cifar-10-batches-py/, so a large
    archive of something else is not decompressed to the end.
    """
    wanted = {f"{CIFAR10_FOLDER}/{name}": name for name in CIFAR10_BATCHES}
    found = {}
    try:
        with tarfile.open(path, "r:gz") as archive:
            for member in archive:
                name = member.name.removeprefix("./")
                if name in (".", CIFAR10_FOLDER) and member.isdir():
                    continue
                if not name.startswith(f"{CIFAR10_FOLDER}/"):
                    return None
                if name in wanted and member.isfile():
                    with archive.extractfile(member) as file:
                        found[wanted[name]] = _cifar10_batch(file, f"{path}/{name}")
                    if len(found) == len(wanted):
                        break
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise ValueError(f"spec {path!r}: cannot read the .tar.gz file: {error}") from None
    if not found:
        return None
    missing = [name for name in CIFAR10_BATCHES if name not in found]
    if missing:
        raise ValueError(f"spec {path!r}: the CIFAR-10 archive has no {CIFAR10_FOLDER}/{missing[0]}")
    return _cifar10_source([found[name] for name in CIFAR10_BATCHES], path)


def _cifar10_source(batches: list[tuple[np.ndarray, list[int]]], location: str) -> ArraySource:
    rows = np.concatenate([data for data, _ in batches])
    labels = [label for _, batch_labels in batches for label in batch_labels]
    return ArraySource(rows.reshape(-1, 3, _CIFAR10_SIDE, _CIFAR10_SIDE), location, labels)  # planes: NCHW


def _cifar10_batch(file, where: str) -> tuple[np.ndarray, list[int]]:
    """(data uint8 [N, 3072], N class ids) of one pickled batch; `where` names it in errors."""
    try:
        batch = safe_pickle.load(file, what=f"CIFAR-10 batch {where}", encoding="bytes")
    except safe_pickle.UnsafePickleError as error:
        raise ValueError(f"CIFAR-10 batch {where} was refused: {error}") from None
    except safe_pickle.NVlabsPickleError as error:
        message = str(error)  # names the batch when the pickle itself is unreadable
        raise ValueError(message if where in message else f"CIFAR-10 batch {where}: {message}") from None
    if not isinstance(batch, dict):
        raise ValueError(f"CIFAR-10 batch {where} holds a {type(batch).__name__}, expected a dict")
    data, labels = _field(batch, "data", where), _field(batch, "labels", where)
    tensor = getattr(data, "tensor", None)
    expected_width = 3 * _CIFAR10_SIDE * _CIFAR10_SIDE
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"CIFAR-10 batch {where}: 'data' must be a uint8 array, got a {type(data).__name__}")
    if tensor.dtype != torch.uint8 or tensor.ndim != 2 or tensor.shape[1] != expected_width:
        found = f"{str(tensor.dtype).removeprefix('torch.')} {tuple(tensor.shape)}"
        raise ValueError(f"CIFAR-10 batch {where}: 'data' must be a uint8 array [N, {expected_width}], got {found}")
    if isinstance(getattr(labels, "tensor", None), torch.Tensor):  # stored as an array by some re-packers
        labels = labels.tensor.tolist() if labels.tensor.ndim == 1 and not labels.tensor.is_floating_point() else None
    if not isinstance(labels, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in labels):
        raise ValueError(f"CIFAR-10 batch {where}: 'labels' must be a list of int class ids")
    if len(labels) != len(tensor):
        raise ValueError(f"CIFAR-10 batch {where} has {len(tensor)} images but {len(labels)} labels")
    outside = [label for label in labels if not 0 <= label < _CIFAR10_CLASSES]
    if outside:
        raise ValueError(f"CIFAR-10 batch {where}: class ids must be 0-{_CIFAR10_CLASSES - 1}, found {outside[0]}")
    return tensor.numpy(), labels


def _field(batch: dict, key: str, where: str):
    # Python 2 str keys come back as bytes; a batch pickled again under Python 3 has str keys.
    for candidate in (key.encode("ascii"), key):
        if candidate in batch:
            return batch[candidate]
    raise ValueError(f"CIFAR-10 batch {where} has no '{key}' entry (keys: {sorted(map(repr, batch))})")


def open_mnist(path: str) -> ArraySource:
    """The images and labels of an MNIST folder (training set) or images file; digits padded to 32x32."""
    images_path = mnist_images_in(path) if os.path.isdir(path) else path
    if images_path is None:
        raise ValueError(f"spec {path!r}: the folder has no {MNIST_TRAIN_IMAGES}[.gz]")
    try:
        labels_path = _mnist_labels_path(images_path)
        images = _read_idx(images_path, _IDX_IMAGES_MAGIC, "images", dims=3)
        labels = _read_idx(labels_path, _IDX_LABELS_MAGIC, "labels", dims=1)
    except ValueError as error:
        raise ValueError(f"spec {path!r}: {error}") from None
    if len(images) != len(labels):
        raise ValueError(
            f"spec {path!r}: {images_path} holds {len(images)} images but {labels_path} {len(labels)} labels"
        )
    if images.shape[1:] == (_MNIST_SIDE, _MNIST_SIDE):
        images = np.pad(images, ((0, 0), (_MNIST_PAD, _MNIST_PAD), (_MNIST_PAD, _MNIST_PAD)))
    return ArraySource(images, path, _labels.from_array(labels, labels_path))


def _mnist_labels_path(images_path: str) -> str:
    match = _MNIST_IMAGES_NAME.fullmatch(os.path.basename(images_path))
    if match is None:
        raise ValueError(f"{images_path} is not named as MNIST images (*-images-idx3-ubyte[.gz])")
    stem = f"{match['prefix']}-labels{match['dot']}idx1-ubyte"
    candidates = [os.path.join(os.path.dirname(images_path), stem + suffix) for suffix in (".gz", "")]
    if match["gz"] is None:
        candidates.reverse()
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise ValueError(f"MNIST images {images_path} have no labels file beside them (looked for {stem}[.gz])")


def _read_idx(path: str, magic: int, what: str, dims: int) -> np.ndarray:
    """The uint8 array of an IDX file (gzipped or not) with `dims` dimensions."""
    try:
        with open(path, "rb") as file:
            data = file.read()
        if data.startswith(_GZIP_MAGIC):
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as error:
        raise ValueError(f"cannot read MNIST {what} {path}: {error}") from None
    header = 4 * (1 + dims)
    if len(data) < header:
        raise ValueError(f"MNIST {what} {path} is truncated: {len(data)} bytes, shorter than its header")
    found, *shape = struct.unpack(f">{1 + dims}I", data[:header])
    if found != magic:
        raise ValueError(f"MNIST {what} {path} has the magic number 0x{found:08x}, expected 0x{magic:08x} (IDX {what})")
    size = int(np.prod(shape, dtype=np.int64))
    if len(data) - header != size:
        raise ValueError(
            f"MNIST {what} {path} holds {len(data) - header} bytes after its header, expected {size} for shape {shape}"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)
