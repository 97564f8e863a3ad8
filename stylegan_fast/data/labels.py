"""Class labels: the JSON format, and aligning it with a dataset's images.

A labels file is JSON with one key, "labels", in one of three forms:

    {"labels": [["cats/001.png", 3], ["dogs/a.jpg", 0], ...]}   folders and zips
    {"labels": [3, 0, 1, ...]}                                  .npy / .npz arrays
    {"labels": null}                                            explicitly unlabelled

- Pairs: a path relative to the folder / zip root with '/' separators, and a class id.
  Every image must have one; entries naming no image are ignored (e.g. corrupt files).
- A list: one class id per array row, in row order; its length must equal the row count.
- Class ids are ints >= 0. The conditioning vector c is one-hot of size
  label_dim = (largest id in the file) + 1, counted over the whole file so that it does
  not change when some images are skipped.

It is found as `dataset.json` at the root of a folder or zip, as the array `labels`
(int [N]) inside a .npz, or given explicitly (open_dataset's `labels`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

FILE_NAME = "dataset.json"
MISSING = -1  # id of an entry the labels file does not mention


class Labels(NamedTuple):
    ids: np.ndarray  # int64 [entries], MISSING where the file has no label
    dim: int  # size of the one-hot vector: largest id in the file + 1
    where: str  # the file (or npz array) they came from, for messages


def parse(text: str | bytes, where: str) -> dict[str, int] | list[int] | None:
    """Parse a labels JSON document; `where` names it in error messages."""
    try:
        document = json.loads(text)
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"labels file {where} is not valid JSON: {error}") from None
    if not isinstance(document, dict) or "labels" not in document:
        raise ValueError(f'labels file {where} must be a JSON object with a "labels" key')
    entries = document["labels"]
    if entries is None:
        return None
    if not isinstance(entries, list):
        raise ValueError(f'labels file {where}: "labels" must be a list or null, got {type(entries).__name__}')
    if all(isinstance(entry, list) for entry in entries) and entries:
        return _pairs(entries, where)
    for position, label in enumerate(entries):
        _check_id(label, where, f"entry {position}")
    return list(entries)


def align(parsed: dict[str, int] | list[int] | None, names: Sequence[str], where: str, by_row: bool) -> Labels | None:
    """Labels for each of `names` (the source's entries, in order) from a parsed file.

    `by_row` says the source is an array, labelled by a plain list; otherwise by pairs.
    """
    if parsed is None:
        return None
    if isinstance(parsed, dict) == by_row:
        wanted = "a plain list of ids, one per array row" if by_row else '[["relative/path", id], ...] pairs'
        raise ValueError(f"labels file {where} does not fit this dataset: it needs {wanted}")
    if isinstance(parsed, dict):
        if not parsed:
            raise ValueError(f"labels file {where} has no entries")
        ids = np.array([parsed.get(name, MISSING) for name in names], dtype=np.int64)
        return Labels(ids, max(parsed.values()) + 1, where)
    if len(parsed) != len(names):
        raise ValueError(f"labels file {where} lists {len(parsed)} class ids for {len(names)} array rows")
    ids = np.array(parsed, dtype=np.int64)
    return Labels(ids, int(ids.max()) + 1 if len(ids) else 0, where)


def from_array(array: np.ndarray, where: str) -> list[int]:
    """Class ids stored as an integer array [N] (the `labels` array of a .npz)."""
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise ValueError(f"labels array {where} must be an integer array [N], got {array.dtype} {array.shape}")
    if len(array) and array.min() < 0:
        raise ValueError(f"labels array {where} must hold class ids >= 0, got {array.min()}")
    return array.astype(np.int64).tolist()


def _pairs(entries: list, where: str) -> dict[str, int]:
    labels: dict[str, int] = {}
    for position, entry in enumerate(entries):
        if len(entry) != 2 or not isinstance(entry[0], str):
            raise ValueError(
                f'labels file {where}: entry {position} must be ["relative/path", class_id], got {entry!r}'
            )
        name, label = entry
        _check_id(label, where, f"entry {position} ({name})")
        if labels.setdefault(name, label) != label:
            raise ValueError(f"labels file {where}: {name} is listed twice with different ids")
    return labels


def _check_id(label, where: str, what: str) -> None:
    if isinstance(label, bool) or not isinstance(label, int) or label < 0:
        raise ValueError(f"labels file {where}: {what} must have an int class id >= 0, got {label!r}")
