"""Where raw images come from: a folder, a zip, a numpy array file, or an LMDB database.

A source lists its entries and loads one at a time; it does no resizing and no error
handling beyond raising (the dataset reports and skips what fails). Each source has:

- `location`: what the user named (a path), for messages;
- `names`: one string per entry, in a fixed order (relative paths, or row numbers);
- `describe(index)`: the full path of an entry, for messages;
- `load(index)`: a PIL image or a uint8 array [H, W] / [H, W, C];
- `builtin_labels()`: (labels, where): the labels that travel with the data (parsed, see
  labels.py) and where they are, or (None, None);
- `labels_by_row`: whether labels are a list in row order (arrays) or (path, id) pairs.

Array layouts accepted in .npy / .npz files (uint8 only):

    [N, H, W]        grayscale
    [N, H, W, C]     C in 1, 3, 4 (alpha is dropped later)
    [N, C, H, W]     C in 1, 3, 4

A 4-D shape is NHWC when only its last dimension is 1, 3 or 4, NCHW when only its
second is; a shape where both are (e.g. [N, 3, 4, 4]) is rejected as ambiguous. A .npz
holds the images as `images` (or as its only array) and optionally class ids as `labels`.
CIFAR-10 and MNIST, in their publishers' files, are read into an ArraySource (standard.py).

An LMDB database (LSUN's format: a folder holding data.mdb) is read by LmdbSource: its
values, in key order, are encoded images. It needs the optional `lmdb` package.
"""

from __future__ import annotations

import io
import os
import threading
import zipfile

import numpy as np
from PIL import Image, ImageOps

from stylegan_fast.data import labels as _labels

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")  # matched case-insensitively
_CHANNEL_COUNTS = (1, 3, 4)


def decode(data: bytes) -> Image.Image:
    """Fully decode an encoded image (so truncation surfaces here), upright per its EXIF tag."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return ImageOps.exif_transpose(image)


def _is_image_name(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    # "._x.png" files are macOS resource forks, not images.
    return name.lower().endswith(IMAGE_EXTENSIONS) and not base.startswith("._")


class FolderSource:
    """Every image file under `root`, recursively, sorted by relative path."""

    labels_by_row = False  # labelled by relative path

    def __init__(self, root: str):
        self.location = root
        found = []
        for folder, _, files in os.walk(root):
            relative = os.path.relpath(folder, root)
            for file in files:
                name = file if relative == "." else f"{relative}/{file}".replace(os.sep, "/")
                if _is_image_name(name):
                    found.append(name)
        self.names = sorted(found)

    def __len__(self) -> int:
        return len(self.names)

    def describe(self, index: int) -> str:
        return os.path.join(self.location, *self.names[index].split("/"))

    def load(self, index: int) -> Image.Image:
        with open(self.describe(index), "rb") as file:
            return decode(file.read())

    def builtin_labels(self):
        path = os.path.join(self.location, _labels.FILE_NAME)
        if not os.path.isfile(path):
            return None, None
        with open(path, "rb") as file:
            return _labels.parse(file.read(), path), path


class ZipSource:
    """Every image member of a zip archive (any depth), sorted by member name.

    The archive is opened lazily and reopened in each process, so the source can be sent
    to DataLoader workers.
    """

    labels_by_row = False  # labelled by member name

    def __init__(self, path: str):
        self.location = path
        self._archive: zipfile.ZipFile | None = None
        self._owner_pid = None
        self._lock = threading.Lock()
        members = self._zip().infolist()
        self.names = sorted(
            m.filename
            for m in members
            if not m.is_dir() and not m.filename.startswith("__MACOSX/") and _is_image_name(m.filename)
        )
        self._has_labels = _labels.FILE_NAME in {m.filename for m in members}

    def __len__(self) -> int:
        return len(self.names)

    def __getstate__(self):
        return {**self.__dict__, "_archive": None, "_owner_pid": None, "_lock": None}

    def __setstate__(self, state):
        self.__dict__.update(state, _lock=threading.Lock())

    def describe(self, index: int) -> str:
        return f"{self.location}/{self.names[index]}"

    def load(self, index: int) -> Image.Image:
        with self._lock:  # Reads share one file handle; decoding runs outside the lock.
            data = self._zip().read(self.names[index])
        return decode(data)

    def builtin_labels(self):
        if not self._has_labels:
            return None, None
        where = f"{self.location}/{_labels.FILE_NAME}"
        return _labels.parse(self._zip().read(_labels.FILE_NAME), where), where

    def _zip(self) -> zipfile.ZipFile:
        if self._archive is None or self._owner_pid != os.getpid():
            self._archive = zipfile.ZipFile(self.location)
            self._owner_pid = os.getpid()
        return self._archive


class LmdbSource:
    """Every value of an LMDB database (e.g. an LSUN category), in key order, each an encoded image.

    `path` is the folder holding data.mdb. Only the keys are listed when the source opens;
    `names` are the keys read as latin-1 (one character per byte, so each name gives its key
    back) and an entry is read by its key. The database is opened read-only without locking,
    once per process and database (see `_lmdb_environment`), so the source can be sent to
    DataLoader workers and used from threads: each read is a transaction of its own.
    """

    labels_by_row = False  # labelled by key

    def __init__(self, path: str):
        self.location = path
        with _lmdb_environment(path).begin() as transaction:
            keys = transaction.cursor().iternext(keys=True, values=False)
            self.names = [key.decode("latin-1") for key in keys]

    def __len__(self) -> int:
        return len(self.names)

    def describe(self, index: int) -> str:
        return f"{self.location}[{self.names[index]}]"

    def load(self, index: int) -> Image.Image:
        with _lmdb_environment(self.location).begin() as transaction:
            data = transaction.get(self.names[index].encode("latin-1"))
        if data is None:
            raise KeyError(f"the key {self.names[index]!r} is no longer in the database")
        return decode(data)

    def builtin_labels(self):
        return None, None


_LMDB_MAX_READERS = 1024  # reader slots; they only count when locking is on
_lmdb_environments: dict[tuple[int, int], object] = {}  # (device, inode) of data.mdb: open environment
_lmdb_pid = os.getpid()  # the process that opened the environments above
_lmdb_lock = threading.Lock()


def _reset_lmdb_lock() -> None:
    global _lmdb_lock
    _lmdb_lock = threading.Lock()  # another thread may have held it when the process forked


os.register_at_fork(after_in_child=_reset_lmdb_lock)


def _lmdb_environment(path: str):
    """This process's read-only environment of the LMDB folder `path`, opened on first use.

    The lmdb package refuses to open one database twice in a process, so all sources of a
    database share one environment (they only read), and it stays open. A forked child
    inherits its parent's environments, which LMDB forbids it to use and which keep it
    from opening its own: it closes them first.
    """
    global _lmdb_pid
    lmdb = _import_lmdb(path)
    try:
        stat = os.stat(os.path.join(path, "data.mdb"))
    except OSError as error:
        raise ValueError(f"spec {path!r}: cannot open the LMDB database: {error}") from None
    key = (stat.st_dev, stat.st_ino)
    with _lmdb_lock:
        if _lmdb_pid != os.getpid():
            for inherited in _lmdb_environments.values():
                inherited.close()
            _lmdb_environments.clear()
            _lmdb_pid = os.getpid()
        env = _lmdb_environments.get(key)
        if env is None:
            try:
                env = lmdb.open(path, readonly=True, lock=False, readahead=False, max_readers=_LMDB_MAX_READERS)
            except lmdb.Error as error:
                raise ValueError(f"spec {path!r}: cannot open the LMDB database: {error}") from None
            _lmdb_environments[key] = env
        return env


def _import_lmdb(where: str):
    try:
        import lmdb
    except ImportError:
        raise ImportError(
            f"spec {where!r} is an LMDB database (data.mdb, as LSUN ships); reading it needs the lmdb package: "
            "pip install lmdb (or pip install 'stylegan-fast[lmdb]')"
        ) from None
    return lmdb


class ArraySource:
    """Rows of a uint8 image array (layouts in the module docstring)."""

    labels_by_row = True

    def __init__(self, images: np.ndarray, location: str, labels: list[int] | None = None):
        self.location = location
        self._images = _as_nhwc(images, location)
        self.names = [str(row) for row in range(len(self._images))]
        self._labels = labels

    @classmethod
    def from_file(cls, path: str) -> ArraySource:
        """Open a .npy (memory-mapped) or .npz (read into memory) file."""
        is_npy = path.lower().endswith(".npy")
        magic = b"\x93NUMPY" if is_npy else b"PK\x03\x04"  # numpy's header; a zip's first entry
        with open(path, "rb") as file:
            if file.read(len(magic)) != magic:
                raise ValueError(
                    f"spec {path!r}: cannot read the numpy file: it is not a {'.npy' if is_npy else '.npz'} file"
                )
        try:
            if is_npy:
                return cls(np.load(path, mmap_mode="r", allow_pickle=False), path)
            with np.load(path, allow_pickle=False) as archive:
                keys = list(archive.keys())
                image_keys = ["images"] if "images" in keys else [k for k in keys if k != "labels"]
                if len(image_keys) != 1:
                    raise ValueError(f"a .npz must hold its images as 'images' or as its only array; found {keys}")
                labels = _labels.from_array(archive["labels"], f"{path}[labels]") if "labels" in keys else None
                return cls(archive[image_keys[0]], path, labels)
        except ValueError as error:
            raise ValueError(f"spec {path!r}: {error}") from None
        except (OSError, zipfile.BadZipFile, EOFError) as error:
            raise ValueError(f"spec {path!r}: cannot read the numpy file: {error}") from None

    def __len__(self) -> int:
        return len(self._images)

    def describe(self, index: int) -> str:
        return f"{self.location}[{index}]"

    def load(self, index: int) -> np.ndarray:
        return np.ascontiguousarray(self._images[index])

    def builtin_labels(self):
        return self._labels, f"{self.location}[labels]"


def _as_nhwc(images: np.ndarray, where: str) -> np.ndarray:
    """A view of `images` as [N, H, W] or [N, H, W, C]."""
    if images.dtype != np.uint8:
        raise ValueError(f"image arrays must be uint8, got {images.dtype} in {where}")
    if images.ndim == 3:
        return images
    if images.ndim != 4:
        raise ValueError(f"image arrays must be [N, H, W], [N, H, W, C] or [N, C, H, W], got shape {images.shape}")
    channels_last = images.shape[3] in _CHANNEL_COUNTS
    channels_first = images.shape[1] in _CHANNEL_COUNTS
    if channels_last and channels_first:
        raise ValueError(f"image array shape {images.shape} is ambiguous: both [N, H, W, C] and [N, C, H, W] fit")
    if channels_first:
        return images.transpose(0, 2, 3, 1)
    if channels_last:
        return images
    raise ValueError(f"image array shape {images.shape} has no channel dimension of size 1, 3 or 4 (second or last)")
