"""Open a configured data source, with an in-process cache so rounds after the first reread nothing.

A hospital agent also keeps a private on-disk cache of the decoded arrays (`use_disk_cache`), since
each round runs in a fresh process forked by the agent.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from primia.config import DataSource
from primia.data.imageset import ImageSet
from primia.data.readers import Progress, read_image_folder, read_kermany, read_npz
from primia.errors import DataError

_cache: dict[tuple[object, ...], ImageSet] = {}
_lock = threading.Lock()
_disk: list[Path] = []


def use_disk_cache(folder: Path | None) -> None:
    """Keep decoded data sets under `folder` (created 0700: it holds the hospital's images)."""
    _disk.clear()
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        _disk.append(folder)


def read_source(
    source: DataSource,
    image_size: int,
    class_names: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> ImageSet:
    path = Path(source.path)
    if source.format == "npz":
        return read_npz(path, source.split, image_size, class_names)
    if source.format == "kermany":
        return read_kermany(path, source.split, image_size, progress)
    if source.split is not None:
        raise DataError(f"data source {path}: 'split' applies to npz and kermany sources only")
    return read_image_folder(path, image_size, class_names, fmt=source.format, progress=progress)


def cached_source(source: DataSource, image_size: int, class_names: Sequence[str] | None = None) -> ImageSet:
    """`read_source`, remembered per process (keyed by path, format, split, size and mtime)."""
    path = Path(source.path)
    mtime = path.stat().st_mtime_ns if path.exists() else None
    key = (str(path.resolve()), source.format, source.split, image_size, tuple(class_names or ()), mtime)
    with _lock:
        hit = _cache.get(key)
    if hit is not None:
        return hit
    data = _from_disk(key) if _disk else None
    if data is None:
        data = read_source(source, image_size, class_names)
        if _disk:
            _to_disk(key, data)
    with _lock:
        _cache[key] = data
    return data


def _disk_path(key: tuple[object, ...]) -> Path:
    return _disk[0] / (hashlib.sha256(repr(key).encode()).hexdigest()[:32] + ".npz")


def _from_disk(key: tuple[object, ...]) -> ImageSet | None:
    path = _disk_path(key)
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as z:
        groups = z["groups"].astype(object) if z["groups"].dtype.kind == "U" else z["groups"]
        return ImageSet(z["images"], z["labels"], groups, tuple(str(c) for c in z["class_names"]),
                        tuple(str(s) for s in z["sources"]))


def _to_disk(key: tuple[object, ...], data: ImageSet) -> None:
    path = _disk_path(key)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    groups = data.groups.astype(str) if data.groups.dtype == object else data.groups  # no pickled objects
    np.savez(tmp, images=data.images, labels=data.labels, groups=groups,
             class_names=np.asarray(data.class_names), sources=np.asarray(data.sources))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the whole new one
