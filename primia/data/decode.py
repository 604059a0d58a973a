"""Decode one image file (PNG/JPEG, DICOM, NIfTI) into a 2-D float32 array, from a path or from the
file's bytes (what a served model receives)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from primia.errors import DataError

PIL_SUFFIXES = {".png", ".jpg", ".jpeg"}
DICOM_SUFFIXES = {".dcm", ".dicom"}
NIFTI_SUFFIXES = {".nii", ".nii.gz"}


def suffix_of(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def decode_image(path: Path) -> np.ndarray:
    """Return a 2-D float32 array; a 3-D volume gives its middle slice along the last axis."""
    suffix = suffix_of(path)
    try:
        if suffix in PIL_SUFFIXES:
            return _decode_pil(path)
        if suffix in DICOM_SUFFIXES:
            return _decode_dicom(path)
        if suffix in NIFTI_SUFFIXES:
            return _decode_nifti(path)
    except DataError:
        raise
    except Exception as exc:  # each library raises its own types for a corrupt file
        raise DataError(f"cannot read image {path}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    raise DataError(f"cannot read image {path}: unsupported file type {suffix!r}")


def sniff(data: bytes) -> str:
    """The file type of raw image bytes from their signature: .png, .jpg or .dcm ('' if none)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    if data[:3] == b"\xff\xd8\xff":
        return ".jpg"
    if data[128:132] == b"DICM":
        return ".dcm"
    return ""


def decode_bytes(data: bytes, what: str = "image") -> np.ndarray:
    """`decode_image` for a file's bytes (PNG, JPEG or DICOM Part 10), the type read from its signature."""
    suffix = sniff(data)
    try:
        if suffix in PIL_SUFFIXES:
            return _decode_pil(io.BytesIO(data))
        if suffix in DICOM_SUFFIXES:
            return _decode_dicom(io.BytesIO(data))
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"cannot read {what}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    raise DataError(f"cannot read {what}: {len(data)} bytes that are not a PNG, JPEG or DICOM file "
                    f"(starts {data[:8]!r})")


def _decode_pil(path: Path | io.BytesIO) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        img.draft("L", (512, 512))  # JPEG: decode at reduced scale when the file is large; exact for PNG
        return np.asarray(img.convert("L"), dtype=np.float32)


def _decode_dicom(path: Path | io.BytesIO) -> np.ndarray:
    import pydicom
    from pydicom.pixels import apply_modality_lut

    ds = pydicom.dcmread(path)
    if "PixelData" not in ds:
        raise DataError(f"cannot read image {path}: DICOM file has no pixel data")
    arr = apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
    if arr.ndim == 3 and getattr(ds, "SamplesPerPixel", 1) == 1:
        arr = arr[arr.shape[0] // 2]  # multi-frame: middle frame
    elif arr.ndim == 3:
        arr = arr.mean(axis=-1)  # colour: luminance
    if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
        arr = arr.max() - arr  # MONOCHROME1 stores bright as low values
    return arr


def dicom_patient_id(path: Path) -> str | None:
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"])
    except Exception:
        return None
    pid = str(getattr(ds, "PatientID", "") or "").strip()
    return pid or None


def _decode_nifti(path: Path) -> np.ndarray:
    import nibabel as nib

    image: Any = nib.load(str(path))  # a SpatialImage; nibabel's stubs type it as FileBasedImage
    arr = np.asarray(image.get_fdata(), dtype=np.float32)
    arr = np.squeeze(arr)
    if arr.ndim == 3:
        arr = arr[..., arr.shape[-1] // 2]
    if arr.ndim != 2:
        raise DataError(f"cannot read image {path}: expected a 2-D or 3-D NIfTI image, got shape {arr.shape}")
    return arr
