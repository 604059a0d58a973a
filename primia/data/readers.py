"""Readers for image folders (PNG/JPEG/DICOM/NIfTI), the Kermany chest X-ray layout and MedMNIST npz.

Every reader returns an `ImageSet` already resized and scaled, with a group id per image so that
partitioners can keep a patient (or near-duplicate cluster) in one place.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from primia.data.decode import (
    DICOM_SUFFIXES,
    NIFTI_SUFFIXES,
    PIL_SUFFIXES,
    decode_image,
    dicom_patient_id,
    suffix_of,
)
from primia.data.imageset import ImageSet
from primia.data.transforms import preprocess
from primia.errors import DataError

Progress = Callable[[int, int], None]
SUFFIXES = {
    "folder": PIL_SUFFIXES | DICOM_SUFFIXES | NIFTI_SUFFIXES,
    "dicom": DICOM_SUFFIXES,
    "nifti": NIFTI_SUFFIXES,
}
KERMANY_CLASSES = ("normal", "bacterial", "viral")
GROUPS_FILE = "groups.csv"


def _require_dir(root: Path, what: str) -> None:
    if not root.exists():
        raise DataError(f"{what} {root} does not exist")
    if not root.is_dir():
        raise DataError(f"{what} {root} is not a folder")


def _load_images(files: Sequence[Path], image_size: int, progress: Progress | None) -> np.ndarray:
    out = np.empty((len(files), 1, image_size, image_size), dtype=np.float32)
    for i, f in enumerate(files):
        out[i] = preprocess(decode_image(f), image_size)
        if progress is not None:
            progress(i + 1, len(files))
    return out


def _read_groups_file(root: Path) -> dict[str, str]:
    path = root / GROUPS_FILE
    if not path.exists():
        return {}
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"file", "group"} <= set(reader.fieldnames):
            raise DataError(f"{path}: expected a CSV with columns 'file' and 'group'")
        return {row["file"]: row["group"] for row in reader}


def read_image_folder(
    root: Path,
    image_size: int,
    class_names: Sequence[str] | None = None,
    fmt: str = "folder",
    progress: Progress | None = None,
) -> ImageSet:
    """Read `root/<class>/<image>`; classes are the sub-folder names (sorted) unless given.

    Groups come from `root/groups.csv` (columns file, group) when present, else the DICOM
    PatientID, else each file is its own group.
    """
    root = Path(root)
    _require_dir(root, "image folder")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    names = tuple(class_names) if class_names is not None else tuple(found)
    unknown = sorted(set(found) - set(names))
    if unknown:
        raise DataError(f"image folder {root}: sub-folders {unknown} are not among the classes {list(names)}")
    allowed = SUFFIXES[fmt]
    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(names):
        cls_dir = root / name
        if cls_dir.is_dir():
            picked = sorted(p for p in cls_dir.iterdir() if p.is_file() and suffix_of(p) in allowed)
            files += picked
            labels += [label] * len(picked)
    if not files:
        raise DataError(f"image folder {root} holds no {fmt} images under class sub-folders {list(names)}")
    table = _read_groups_file(root)
    groups = [_group_of(f, root, table) for f in files]
    return ImageSet(
        images=_load_images(files, image_size, progress),
        labels=np.asarray(labels, dtype=np.int64),
        groups=np.asarray(groups, dtype=object),
        class_names=names,
        sources=tuple(str(f) for f in files),
    )


def _group_of(f: Path, root: Path, table: dict[str, str]) -> str:
    rel = f.relative_to(root).as_posix()
    if rel in table:
        return table[rel]
    if suffix_of(f) in DICOM_SUFFIXES:
        pid = dicom_patient_id(f)
        if pid:
            return f"patient:{pid}"
    return rel


_KERMANY_PATIENT = re.compile(r"^(person\d+)_")
_KERMANY_NORMAL = re.compile(r"^(.*IM-\d+)-\d+")


def kermany_label(name: str, folder: str) -> int:
    """PriMIA's three classes from the Kermany layout: NORMAL, or PNEUMONIA split by file name."""
    if folder.upper() == "NORMAL":
        return 0
    lowered = name.lower()
    if "bacteria" in lowered:
        return 1
    if "virus" in lowered:
        return 2
    raise DataError(f"Kermany image {name}: PNEUMONIA file name names neither 'bacteria' nor 'virus'")


def kermany_group(name: str) -> str:
    """The patient a Kermany file belongs to: `person123_...` or the `IM-0115` prefix of normals."""
    m = _KERMANY_PATIENT.match(name) or _KERMANY_NORMAL.match(name)
    return m.group(1) if m else Path(name).stem


def read_kermany(root: Path, split: str | None, image_size: int, progress: Progress | None = None) -> ImageSet:
    """Read `root/{train,test}/{NORMAL,PNEUMONIA}` (or a split folder given directly)."""
    root = Path(root)
    _require_dir(root, "Kermany folder")
    base = root / split if split else root
    _require_dir(base, f"Kermany {split or ''} split folder".replace("  ", " "))
    files: list[Path] = []
    labels: list[int] = []
    for folder in ("NORMAL", "PNEUMONIA"):
        d = base / folder
        if not d.is_dir():
            raise DataError(f"Kermany folder {base}: expected a sub-folder {folder}")
        for f in sorted(p for p in d.iterdir() if suffix_of(p) in PIL_SUFFIXES):
            files.append(f)
            labels.append(kermany_label(f.name, folder))
    if not files:
        raise DataError(f"Kermany folder {base} holds no images")
    return ImageSet(
        images=_load_images(files, image_size, progress),
        labels=np.asarray(labels, dtype=np.int64),
        groups=np.asarray([kermany_group(f.name) for f in files], dtype=object),
        class_names=KERMANY_CLASSES,
        sources=tuple(str(f) for f in files),
    )


def read_npz(
    path: Path, split: str | None, image_size: int, class_names: Sequence[str] | None = None
) -> ImageSet:
    """Read a MedMNIST-format file: `{split}_images` (N,H,W[,3]) and `{split}_labels` (N,1)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"npz file {path} does not exist")
    split = split or "train"
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            if f"{split}_images" not in keys or f"{split}_labels" not in keys:
                raise DataError(
                    f"npz file {path}: expected arrays '{split}_images' and '{split}_labels', found {sorted(keys)}"
                )
            raw, lab = npz[f"{split}_images"], npz[f"{split}_labels"]
    except (ValueError, OSError) as exc:
        raise DataError(f"cannot read npz file {path}: {exc}") from None
    if lab.ndim == 2 and lab.shape[1] != 1:
        raise DataError(f"npz file {path}: multi-label '{split}_labels' of shape {lab.shape} is not supported")
    labels = lab.reshape(-1).astype(np.int64)
    if raw.ndim == 4:
        raw = raw.mean(axis=-1)  # RGB MedMNIST sets: to luminance, our networks take one channel
    if raw.ndim != 3 or len(raw) != len(labels):
        raise DataError(f"npz file {path}: expected (N,H,W) images matching {len(labels)} labels, got {raw.shape}")
    names = tuple(class_names) if class_names else tuple(str(i) for i in range(int(labels.max()) + 1))
    images = np.stack([preprocess(img.astype(np.float32), image_size) for img in raw])
    sources = tuple(f"{path.name}[{split}:{i}]" for i in range(len(labels)))
    return ImageSet(images, labels, np.asarray(sources, dtype=object), names, sources)
