"""Medical image data: readers, transforms, partitioners, de-duplication and synthetic images."""

from primia.data.imageset import ImageSet

__all__ = ["ImageSet"]
