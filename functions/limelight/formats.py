"""Which files LimeLight takes, by suffix, and what it writes them as (no imports: the serverless
start function reads these without loading the engine)."""

from __future__ import annotations

__all__ = ["CONTAINER_SUFFIXES", "IMAGE_SUFFIXES", "KEEP_CONTAINER", "PHOTO_OUTPUT_SUFFIXES", "photo_output_suffix"]

# Video containers read by suffix (by the CLI in a folder, by the serverless workflow from S3).
# Broadcast cameras write MXF (XDCAM, P2), camcorders .mts / .m2ts (AVCHD), old phones .3gp.
CONTAINER_SUFFIXES = frozenset({".mp4", ".mov", ".m4v", ".mkv", ".avi", ".webm", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts",
                                ".mxf", ".3gp", ".wmv", ".flv",
                                ".dv", ".vob", ".mod", ".tod", ".ogv", ".f4v", ".divx"})  # DV and SD camcorders, DVDs
# Containers that keep every timing rule (start offset, VFR) and are written as they came.
KEEP_CONTAINER = frozenset({".mp4", ".mov", ".m4v", ".mkv"})

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".heic", ".heif",
                            ".tif", ".tiff", ".avif", ".jfif", ".jpe"})  # photo desks' TIFF, the web's AVIF / JFIF
# Photos in formats OpenCV cannot write (an iPhone's HEIC) are published as JPEG.
_PUBLISHED_AS_JPEG = frozenset({".heic", ".heif", ".jfif", ".jpe"})  # OpenCV writes neither HEIC nor these names


def photo_output_suffix(suffix: str) -> str:
    """The suffix a photo named `suffix` is written with: its own, JPEG for HEIC / JFIF, PNG for a
    one-frame GIF (OpenCV reads GIF but does not write it)."""
    suffix = suffix.lower()
    return ".jpg" if suffix in _PUBLISHED_AS_JPEG else ".png" if suffix == ".gif" else suffix


PHOTO_OUTPUT_SUFFIXES = frozenset(photo_output_suffix(s) for s in IMAGE_SUFFIXES | {".gif"})
