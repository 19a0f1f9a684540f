"""Finding, reading and writing image files for the ``confounder protect`` command.

Outputs are lossless by default (JPEG and lossy WebP re-encoding wipe out most of the noise), written atomically
(a temporary file renamed into place, so a killed run never leaves a half-written image) and carry no EXIF/XMP
metadata; the ICC colour profile is kept so colours do not shift.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}

# format name -> (file suffix, PIL format, save options)
OUTPUT_FORMATS = {
    "png": (".png", "PNG", {}),
    "tiff": (".tiff", "TIFF", {"compression": "tiff_deflate"}),
    "webp-lossless": (".webp", "WEBP", {"lossless": True, "quality": 100, "exact": True}),
    "jpeg": (".jpg", "JPEG", {"quality": 95, "subsampling": 0}),
}
LOSSY_FORMATS = {"jpeg"}


@dataclass(frozen=True)
class ImageJob:
    """One input file and the output file it becomes."""

    source: Path
    target: Path


def find_images(inputs: list[Path], output_dir: Path, suffix: str) -> tuple[list[ImageJob], list[str]]:
    """Maps input files and folders (searched recursively) to output paths under ``output_dir``.

    A file given directly lands at ``output_dir/<name>``; the files of a folder keep their paths relative to that
    folder. Returns the jobs and one error line per input that cannot be protected.
    """
    output_dir = output_dir.resolve()
    jobs: list[ImageJob] = []
    errors: list[str] = []
    for given in inputs:
        if given.is_dir():
            root = given.resolve()
            if root == output_dir:
                errors.append(f"{given}: the output folder cannot be an input folder; choose another --output")
                continue
            found = sorted(path for path in root.rglob("*")
                           if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
                           and output_dir not in path.resolve().parents)
            jobs += [ImageJob(path, output_dir / path.relative_to(root).with_suffix(suffix)) for path in found]
        elif given.is_file():
            jobs.append(ImageJob(given, output_dir / (given.stem + suffix)))
        else:
            errors.append(f"{given}: no such file or folder")

    sources = {job.source.resolve() for job in jobs}
    seen: set[Path] = set()
    unique: list[ImageJob] = []
    for job in jobs:
        if job.target in sources:
            errors.append(f"{job.source}: its output {job.target} would overwrite an input; choose another --output")
        elif job.target in seen:
            errors.append(f"{job.source}: another input already writes {job.target}; rename one of them")
        else:
            seen.add(job.target)
            unique.append(job)
    return unique, errors


def load_image(path: Path) -> Image.Image:
    """Reads an image fully (first frame of animations), with its EXIF orientation applied."""
    with Image.open(path) as image:
        image.load()
        icc_profile = image.info.get("icc_profile")
        oriented = ImageOps.exif_transpose(image)
    oriented.info = {"icc_profile": icc_profile} if icc_profile else {}
    return oriented


def save_image(image: Image.Image, target: Path, output_format: str, icc_profile: bytes | None = None) -> None:
    """Writes ``image`` to ``target`` atomically, without metadata other than the colour profile."""
    _, pil_format, options = OUTPUT_FORMATS[output_format]
    if pil_format == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    if icc_profile:
        options = {**options, "icc_profile": icc_profile}
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            image.save(stream, format=pil_format, **options)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
