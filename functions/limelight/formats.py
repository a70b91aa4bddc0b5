"""Which files LimeLight takes, by suffix, and what it writes them as (no imports: the serverless
start function reads these without loading the engine)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from limelight.errors import OutputError

__all__ = ["CONTAINER_SUFFIXES", "IMAGE_SUFFIXES", "KEEP_CONTAINER", "NAME_MAX", "PHOTO_OUTPUT_SUFFIXES",
           "photo_output_suffix", "publish_bytes", "scratch_path"]

NAME_MAX = 255  # bytes in one file name, on every common file system

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


def scratch_path(dst: Path) -> Path:
    """A hidden, unique name beside `dst` to write it under before renaming it to `dst` (nothing
    half-written is ever published): `.NAME.part-XXXXXXXX.EXT`, NAME shortened by whole characters
    so that the name fits in NAME_MAX bytes (a long title in CJK fills them with 80 characters)."""
    tag = f".part-{secrets.token_hex(4)}{dst.suffix}"
    stem, room = dst.stem, NAME_MAX - 1 - len(tag.encode())
    while len(stem.encode()) > room:
        stem = stem[:-1]
    return dst.with_name(f".{stem}{tag}")


def publish_bytes(dst: Path, data: bytes, what: str = "the file") -> None:
    """Write `data` to `dst` under a scratch name, then rename it: `dst` is whole or absent.
    OutputError names the file when it cannot be written (a full disk, a read-only folder)."""
    tmp = scratch_path(dst)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, dst)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{dst}: cannot write {what} ({error.strerror or error})") from None
