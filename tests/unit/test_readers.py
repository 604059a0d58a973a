"""Every reader on real files (Kermany chest X-rays, a DICOM radiograph) or generated ones."""

from __future__ import annotations

import shutil
from importlib.util import find_spec
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from primia.config import DataSource
from primia.data.readers import kermany_group, kermany_label, read_image_folder, read_kermany, read_npz
from primia.data.sources import read_source
from primia.data.synthetic import make_synthetic, write_image_folder
from primia.errors import DataError


def _package_dir(name: str) -> Path:
    spec = find_spec(name)
    assert spec is not None and spec.submodule_search_locations, f"{name} is not installed"
    return Path(next(iter(spec.submodule_search_locations)))


def test_png_folder_with_groups(tmp_path: Path) -> None:
    data = make_synthetic(12, num_classes=3, size=16, seed=1)
    write_image_folder(data, tmp_path / "site")
    got = read_image_folder(tmp_path / "site", image_size=16)
    assert got.images.shape == (12, 1, 16, 16)
    assert got.class_names == ("class0", "class1", "class2")
    assert sorted(got.labels.tolist()) == sorted(data.labels.tolist())
    assert set(got.groups) == set(data.groups)
    assert 0.0 <= got.images.min() and got.images.max() <= 1.0


def test_jpeg_folder_resizes_any_size(tmp_path: Path) -> None:
    for cls, size in (("a", (50, 70)), ("b", (300, 200))):
        (tmp_path / cls).mkdir()
        arr = (np.random.default_rng(0).random(size) * 255).astype(np.uint8)
        Image.fromarray(arr).convert("RGB").save(tmp_path / cls / "x.jpg")
    got = read_image_folder(tmp_path, image_size=32)
    assert got.images.shape == (2, 1, 32, 32) and got.labels.tolist() == [0, 1]


def test_kermany_real_chest_xrays(tmp_path: Path) -> None:
    src = _package_dir("pneumonia_model_package") / "datasets" / "pneumonia-data" / "val"
    files = sorted(src.glob("*.jpeg"))
    assert len(files) == 16
    for f in files:
        folder = "NORMAL" if "NORMAL" in f.name else "PNEUMONIA"
        (tmp_path / "test" / folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, tmp_path / "test" / folder / f.name)
    # one viral case, generated, so all three of PriMIA's classes appear
    shutil.copy(files[-1], tmp_path / "test" / "PNEUMONIA" / "person77_virus_140.jpeg")
    data = read_kermany(tmp_path, "test", image_size=64)
    assert data.class_names == ("normal", "bacterial", "viral")
    assert data.class_counts().tolist() == [8, 8, 1]
    assert "person1946" in set(data.groups)  # person1946 has two images: one group
    assert (data.groups == "person1946").sum() == 2


def test_kermany_names() -> None:
    assert kermany_label("person1_bacteria_1.jpeg", "PNEUMONIA") == 1
    assert kermany_label("person1_virus_6.jpeg", "PNEUMONIA") == 2
    assert kermany_label("IM-0115-0001.jpeg", "NORMAL") == 0
    assert kermany_group("NORMAL2-IM-1427-0001.jpeg") == "NORMAL2-IM-1427"
    assert kermany_group("person12_virus_3.jpeg") == "person12"
    with pytest.raises(DataError, match="neither"):
        kermany_label("person1_x.jpeg", "PNEUMONIA")


def test_real_dicom_radiograph_and_patient_groups(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    real = get_testdata_file("RG1_UNCI.dcm")
    assert real is not None, "pydicom-data is not installed"
    (tmp_path / "chest").mkdir()
    shutil.copy(real, tmp_path / "chest" / "rg1.dcm")
    shutil.copy(real, tmp_path / "chest" / "rg1_copy.dcm")
    data = read_source(DataSource(path=tmp_path, format="dicom"), image_size=64)
    assert data.images.shape == (2, 1, 64, 64)
    assert data.groups[0] == data.groups[1] and str(data.groups[0]).startswith("patient:")
    assert data.images.std() > 0.05


def test_nifti_2d_and_3d(tmp_path: Path) -> None:
    (tmp_path / "liver").mkdir()
    rng = np.random.default_rng(0)
    nib.save(nib.Nifti1Image(rng.random((40, 30)).astype(np.float32), np.eye(4)), tmp_path / "liver" / "a.nii.gz")
    nib.save(nib.Nifti1Image(rng.random((40, 30, 9)).astype(np.float32), np.eye(4)), tmp_path / "liver" / "b.nii")
    data = read_source(DataSource(path=tmp_path, format="nifti"), image_size=24)
    assert data.images.shape == (2, 1, 24, 24) and data.class_names == ("liver",)


def _medmnist(path: Path, labels: np.ndarray, rgb: bool = False) -> Path:
    n = len(labels)
    shape = (n, 28, 28, 3) if rgb else (n, 28, 28)
    imgs = (np.random.default_rng(0).random(shape) * 255).astype(np.uint8)
    np.savez(path, train_images=imgs, train_labels=labels.reshape(-1, 1), test_images=imgs[:2],
             test_labels=labels[:2].reshape(-1, 1))
    return path


def test_npz_medmnist(tmp_path: Path) -> None:
    p = _medmnist(tmp_path / "pneumoniamnist.npz", np.array([0, 1, 1, 0, 1]))
    data = read_npz(p, "train", 32)
    assert data.images.shape == (5, 1, 32, 32) and data.labels.tolist() == [0, 1, 1, 0, 1]
    assert read_npz(_medmnist(tmp_path / "rgb.npz", np.array([0, 2]), rgb=True), "test", 16).num_classes == 3


def test_npz_label_out_of_range(tmp_path: Path) -> None:
    p = _medmnist(tmp_path / "x.npz", np.array([0, 1, 5]))
    with pytest.raises(DataError, match=r"label 5 of x.npz\[train:2\] is out of range"):
        read_npz(p, "train", 16, class_names=("a", "b"))


def test_npz_missing_split(tmp_path: Path) -> None:
    p = _medmnist(tmp_path / "x.npz", np.array([0, 1]))
    with pytest.raises(DataError, match="expected arrays 'val_images'"):
        read_npz(p, "val", 16)


def test_missing_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"image folder {tmp_path / 'nope'} does not exist"):
        read_image_folder(tmp_path / "nope", 16)


def test_unreadable_image_is_named(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="cannot read image .*broken.png"):
        read_image_folder(tmp_path, 16)


def test_unknown_class_folder(tmp_path: Path) -> None:
    write_image_folder(make_synthetic(4, 2, 8), tmp_path)
    with pytest.raises(DataError, match=r"sub-folders \['class1'\] are not among the classes"):
        read_image_folder(tmp_path, 8, class_names=("class0",))


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    with pytest.raises(DataError, match="holds no folder images"):
        read_image_folder(tmp_path, 8)
