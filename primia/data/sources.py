"""Open a configured data source, with an in-process cache so rounds after the first reread nothing."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from primia.config import DataSource
from primia.data.imageset import ImageSet
from primia.data.readers import Progress, read_image_folder, read_kermany, read_npz
from primia.errors import DataError

_cache: dict[tuple[object, ...], ImageSet] = {}
_lock = threading.Lock()


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
    data = read_source(source, image_size, class_names)
    with _lock:
        _cache[key] = data
    return data
