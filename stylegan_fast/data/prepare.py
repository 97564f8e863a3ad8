"""Prepare a dataset ahead of training: each image cropped, resized and stored as a small PNG.

`prepare_dataset(source, dest, resolution)` reads anything `open_dataset` reads, prepares
every image exactly as training does (`transforms.prepare_image`) and writes a zip:

    img/00000000.png, img/00000001.png, ...   the readable images, in the source's order
    dataset.json                               their labels as [["img/00000000.png", id], ...]
                                               (labels.py); only when the data is labelled

Members are stored uncompressed (PNG is compressed already) with a fixed timestamp, so the
same input gives the same bytes. `open_dataset(dest, resolution)` then yields exactly the
pixels and labels that `open_dataset(source, resolution)` yields (PNG is lossless), while
decoding only small files.

Images are streamed: a few threads decode and encode ahead of the writer, which keeps the
source's order, so memory does not grow with the dataset. The zip is written under a
temporary name in the destination's folder, synced, and renamed when complete, so an
interrupted run never leaves a partial file under the final name.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import os
import zipfile
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from PIL import Image

from stylegan_fast._atomic import atomic_path
from stylegan_fast.data import dataset, transforms
from stylegan_fast.data import labels as _labels
from stylegan_fast.data.sources import IMAGE_EXTENSIONS

IMAGE_FOLDER = "img"
DEFAULT_THREADS = min(8, os.cpu_count() or 1)  # PIL releases the GIL while decoding, resizing and encoding
_MEMBER_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest zip timestamp: output bytes do not depend on the clock

logger = logging.getLogger(__name__)


class Prepared(NamedTuple):
    """What `prepare_dataset` wrote."""

    dest: Path  # the zip
    written: int  # images in it
    skipped: list[tuple[str, str]]  # (path, error) of each image that could not be read
    label_dim: int  # one-hot size of the written labels (0 when unlabelled)


def member_name(index: int) -> str:
    """The zip member of the index-th written image."""
    return f"{IMAGE_FOLDER}/{index:08d}.png"


def prepare_dataset(
    source: str | os.PathLike,
    dest: str | os.PathLike,
    resolution: int,
    channels: int = 3,
    labels: str | os.PathLike | bool | None = None,
    *,
    max_images: int | None = None,
    force: bool = False,
    threads: int = DEFAULT_THREADS,
    progress: Callable[[int, int], None] | None = None,
) -> Prepared:
    """Write `source`'s images, prepared at `resolution`, as a zip of PNGs at `dest`.

    Args:
        source: anything `open_dataset` takes: a folder, .zip, .npy / .npz, 'demo:<name>'.
        dest: the output path, ending in .zip. An existing file is replaced only with `force`.
        resolution: output side, a power of two >= 4 (centre crop to a square, Lanczos resize).
        channels: 3 (RGB PNGs) or 1 (grayscale PNGs).
        labels: as in `open_dataset`: None takes the data's own labels, a path a labels
            file, False none.
        max_images: stop after writing this many images (unreadable ones do not count).
        threads: decoding / encoding threads.
        progress: called as progress(written, planned) after each written image.

    Unreadable images are logged as warnings with their path and error, skipped, counted
    in a summary warning and listed in the result. The written labels' label_dim is their
    largest id + 1, so when no written image has the source's largest ids it is smaller
    than the source's; that is logged too.
    """
    resolution = transforms.check_resolution(resolution)
    channels = transforms.check_channels(channels)
    dest = _check_dest(dest, force)
    if max_images is not None and (isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1):
        raise ValueError(f"max_images must be None or an int >= 1, got {max_images!r}")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an int >= 1, got {threads!r}")
    src = dataset.open_source(source)
    if len(src) == 0:
        raise ValueError(f"source {src.location!r}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)})")
    aligned = dataset.source_labels(src, labels)

    dest.parent.mkdir(parents=True, exist_ok=True)
    planned = len(src) if max_images is None else min(len(src), max_images)
    with atomic_path(dest) as partial:
        with zipfile.ZipFile(partial, "x", zipfile.ZIP_STORED) as archive:
            written, ids, skipped = _write_images(archive, src, resolution, channels, aligned, planned, threads, progress)
            if ids is not None:
                entries = [[member_name(i), label] for i, label in enumerate(ids)]
                archive.writestr(_member(_labels.FILE_NAME), json.dumps({"labels": entries}))
    if skipped:
        logger.warning("%s: skipped %d images that could not be read; wrote %d", src.location, len(skipped), written)
    label_dim = 0 if ids is None else max(ids) + 1
    if ids is not None and label_dim < aligned.dim:
        logger.warning("%s: label_dim is %d, not the source's %d: no written image has the larger class ids",
                       dest, label_dim, aligned.dim)  # fmt: skip
    return Prepared(dest, written, skipped, label_dim)


def _check_dest(dest, force: bool) -> Path:
    if not isinstance(dest, (str, os.PathLike)):
        raise TypeError(f"dest must be a str or a path, got {type(dest).__name__}")
    dest = Path(dest)
    if dest.suffix.lower() != ".zip":
        raise ValueError(f"dest must be a path ending in .zip, got {os.fspath(dest)!r}")
    if dest.is_dir():
        raise ValueError(f"dest {os.fspath(dest)!r} is a folder; expected a .zip file path")
    if os.path.lexists(dest) and not force:
        raise FileExistsError(f"dest {os.fspath(dest)!r} exists; pass force=True (--force) to replace it")
    return dest


def _write_images(archive, src, resolution, channels, aligned, planned, threads, progress):
    """Write up to `planned` readable images: (how many, class id of each or None, skipped (path, error))."""
    written, ids, skipped = 0, ([] if aligned is not None else None), []
    for entry, png, error in _encoded(src, resolution, channels, threads):
        if error is not None:
            path, reason = src.describe(entry), f"{type(error).__name__}: {error}"
            logger.warning("skipping unreadable image %s: %s", path, reason)
            skipped.append((path, reason))
            continue
        if ids is not None:
            if aligned.ids[entry] == _labels.MISSING:
                raise ValueError(f"labels file {aligned.where} has no label for {src.names[entry]}")
            ids.append(int(aligned.ids[entry]))
        archive.writestr(_member(member_name(written)), png)
        written += 1
        if progress is not None:
            progress(written, planned)
        if written == planned:
            break
    if not written:
        raise ValueError(
            f"source {src.location!r}: none of its {len(skipped)} images could be read "
            f"(first {skipped[0][0]}: {skipped[0][1]})"
        )
    return written, ids, skipped


def _encoded(src, resolution: int, channels: int, threads: int) -> Iterator[tuple[int, bytes | None, Exception | None]]:
    """(entry, PNG bytes, None) or (entry, None, error) for each entry, in order.

    At most 2 * threads entries are in flight, so memory stays bounded however far the
    writer lags.
    """

    def encode(entry: int):
        try:
            pixels = transforms.prepare_image(src.load(entry), resolution, channels)
        except Exception as error:  # Any failure of one file is that file's problem: report it.
            return None, error
        buffer = io.BytesIO()
        Image.fromarray(pixels[0] if channels == 1 else pixels.transpose(1, 2, 0)).save(buffer, format="PNG")
        return buffer.getvalue(), None

    entries = iter(range(len(src)))
    with ThreadPoolExecutor(threads) as pool:
        pending = deque((entry, pool.submit(encode, entry)) for entry in itertools.islice(entries, 2 * threads))
        try:
            while pending:
                entry, future = pending.popleft()
                pending.extend((later, pool.submit(encode, later)) for later in itertools.islice(entries, 1))
                yield entry, *future.result()
        finally:
            for _, future in pending:
                future.cancel()


def _member(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_MEMBER_TIME)
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16  # rw-r--r-- when extracted
    return info
