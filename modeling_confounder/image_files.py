"""Finding, reading and writing image files for the ``confounder protect`` command and the Space.

People point this at their whole photo library, so every step assumes hostile or broken files:

- Finding: folders are walked without following symlinked folders (no loops), and a symlinked file is used only
  when it points inside the input folder. No output path can leave the output folder.
- Reading: every failure becomes an ``UnreadableImage`` with one plain reason (empty file, not an image, truncated
  or damaged data, too many pixels), so a batch reports it and goes on. Pixel counts are checked from the header,
  before decoding, which stops decompression bombs. Animated images (GIF, WebP, APNG) and multi-page TIFFs are
  read as their first frame. EXIF orientation is applied. CMYK images are converted to sRGB through their ICC
  profile; other profiles are kept when they describe the image's colours.
- Writing: lossless by default (JPEG and lossy WebP re-encoding wipe out most of the noise), atomically (a
  temporary file renamed into place, so a killed run never leaves a half-written image), and with no EXIF, GPS or
  XMP metadata unless asked for (then EXIF without its GPS block; XMP is never kept: it can repeat the location).
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import ExifTags, Image, ImageCms, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}

# format name -> (file suffix, PIL format, save options)
OUTPUT_FORMATS = {
    "png": (".png", "PNG", {}),
    "tiff": (".tiff", "TIFF", {"compression": "tiff_deflate"}),
    "webp-lossless": (".webp", "WEBP", {"lossless": True, "quality": 100, "exact": True}),
    "jpeg": (".jpg", "JPEG", {"quality": 95, "subsampling": 0}),
}
LOSSY_FORMATS = {"jpeg"}

DEFAULT_MAX_PIXELS = 100_000_000
"""Larger images are refused before decoding: 100 MP is past almost any camera, and memory grows with the pixels
(1.5 GB peak for a 12 MP photo on CPU, results/speed.json)."""

TEMPORARY_SUFFIX = ".confounder-part"
"""Suffix of the temporary files of atomic writes; a killed run can leave them, and the next run removes them."""

# EXIF tags never written: the location, and the orientation (already applied to the pixels) and XMP (which can
# hold the location again).
PRIVATE_EXIF_TAGS = (ExifTags.Base.GPSInfo, ExifTags.Base.Orientation, ExifTags.Base.XMLPacket)


class UnreadableImage(Exception):
    """An input that cannot be protected; its message is the reason, without the file name.

    ``kind`` sorts the reasons for callers that word them their own way: "empty", "not an image", "too large",
    "damaged", "missing" or "permission".
    """

    def __init__(self, reason: str, kind: str) -> None:
        super().__init__(reason)
        self.kind = kind


@dataclass(frozen=True)
class ImageJob:
    """One input file and the output file it becomes."""

    source: Path
    target: Path


@dataclass
class SourceImage:
    """An input image as read: its first frame, oriented, with what writing the output needs to know."""

    image: Image.Image
    icc_profile: bytes | None  # describes ``image``'s colours; None means sRGB
    exif: bytes | None  # the EXIF worth keeping on request: no GPS, orientation or XMP
    frames: int  # > 1 for animations and multi-page files, of which only the first frame is read


def find_images(inputs: list[Path], output_dir: Path, suffix: str) -> tuple[list[ImageJob], list[str], list[str]]:
    """Maps input files and folders (searched recursively) to output paths under ``output_dir``.

    A file given directly lands at ``output_dir/<name>``; the files of a folder keep their paths relative to that
    folder. Returns the jobs, one error line per input that cannot be protected, and notes (what was not
    followed, without being an error).
    """
    output_dir = output_dir.resolve()
    jobs: list[ImageJob] = []
    errors: list[str] = []
    notes: list[str] = []
    for given in inputs:
        if given.is_dir():
            root = given.resolve()
            if root == output_dir:
                errors.append(f"{given}: the output folder cannot be an input folder; choose another --output")
                continue
            found = images_in_folder(root, output_dir, errors, notes)
            jobs += [ImageJob(path, output_dir / path.relative_to(root).with_suffix(suffix)) for path in found]
        elif given.is_file():
            jobs.append(ImageJob(given, output_dir / (given.stem + suffix)))
        elif given.exists():
            errors.append(f"{given}: not a regular file or folder")
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
        elif not job.target.parent.resolve().is_relative_to(output_dir):
            errors.append(f"{job.source}: its output folder {job.target.parent} is a symlink that leaves "
                          f"{output_dir}; not written")
        else:
            seen.add(job.target)
            unique.append(job)
    return unique, errors, notes


def images_in_folder(root: Path, output_dir: Path, errors: list[str], notes: list[str]) -> list[Path]:
    """The image files under ``root`` (resolved), sorted; symlinks must stay inside ``root``."""
    found = []

    def cannot_list(error: OSError) -> None:
        errors.append(f"{error.filename}: cannot list this folder ({error.strerror})")

    # followlinks=False: a symlinked folder can loop forever or lead out of the input tree.
    for folder, subfolders, files in os.walk(root, onerror=cannot_list):
        folder = Path(folder)
        for name in subfolders:
            if (folder / name).is_symlink():
                notes.append(f"{folder / name}: symlinked folder not followed")
        # Outputs written inside the input folder must not be protected again on the next run.
        subfolders[:] = [name for name in subfolders if (folder / name).resolve() != output_dir]
        for name in files:
            path = folder / name
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if path.is_symlink():
                target = path.resolve()
                if not target.is_relative_to(root):
                    errors.append(f"{path}: a symlink to {target}, outside the input folder; not followed")
                    continue
            if not path.is_file():
                # A pipe or device would block the reader or never end.
                errors.append(f"{path}: {'a broken symlink' if path.is_symlink() else 'not a regular file'}")
                continue
            found.append(path)
    return sorted(found)


def read_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> SourceImage:
    """Reads the first frame of an image file with its EXIF orientation applied, in display colours.

    Raises ``UnreadableImage`` with the reason for any file that cannot be read.
    """
    try:
        if path.stat().st_size == 0:
            raise UnreadableImage("empty file (0 bytes)", "empty")
        with warnings.catch_warnings():
            # Pillow's warnings (odd metadata; a pixel count between its limit and twice that, where the check
            # below is the one that applies) say nothing a user can act on, but a short read is a damaged file.
            warnings.simplefilter("ignore")
            warnings.filterwarnings("error", message="Truncated File Read")
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise UnreadableImage(f"{width}×{height} is {width * height / 1e6:.0f} megapixels, over the "
                                          f"limit of {max_pixels / 1e6:g}; downscale it first", "too large")
                frames = getattr(image, "n_frames", 1)
                image.load()
                icc_profile = image.info.get("icc_profile")
                oriented = ImageOps.exif_transpose(image)
                exif = shareable_exif(oriented)
    except UnreadableImage:
        raise
    except Image.DecompressionBombError:
        raise UnreadableImage("declares far more pixels than Pillow will decode (a decompression bomb?)",
                               "too large") from None
    except UnidentifiedImageError:
        raise UnreadableImage("not an image, or a format Pillow cannot read", "not an image") from None
    except FileNotFoundError:
        raise UnreadableImage("no such file (moved or deleted during the run?)", "missing") from None
    except PermissionError:
        raise UnreadableImage("permission denied", "permission") from None
    except Exception as error:  # noqa: BLE001 - Pillow reports damaged data with many exception types
        reason = "truncated image data" if "truncated" in str(error).lower() else "damaged image data"
        raise UnreadableImage(f"{reason} ({type(error).__name__}: {error})", "damaged") from None
    image, icc_profile = in_display_colors(oriented, icc_profile)
    return SourceImage(image, icc_profile, exif, frames)


def parse_profile(icc_profile: bytes | None) -> ImageCms.ImageCmsProfile | None:
    """The ICC profile as littlecms reads it; None when absent or unreadable (the image is then taken as sRGB)."""
    if not icc_profile:
        return None
    try:
        return ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
    except (ImageCms.PyCMSError, OSError, ValueError):
        return None


def in_display_colors(image: Image.Image, icc_profile: bytes | None) -> tuple[Image.Image, bytes | None]:
    """CMYK becomes sRGB (through its profile when it has one): PNG and WebP cannot hold CMYK, and a plain
    conversion shifts colours. Other images keep their profile when it describes their colour space."""
    profile = parse_profile(icc_profile)
    space = profile.profile.xcolor_space.strip() if profile else None
    if image.mode == "CMYK":
        if space == "CMYK":
            try:
                return ImageCms.profileToProfile(image, profile, ImageCms.createProfile("sRGB"), outputMode="RGB"), None
            except ImageCms.PyCMSError:
                pass
        return image.convert("RGB"), None
    gray = image.mode in ("1", "L", "LA", "La", "I", "F") or image.mode.startswith("I;16")
    return image, icc_profile if space == ("GRAY" if gray else "RGB") else None


def shareable_exif(image: Image.Image) -> bytes | None:
    """The image's EXIF without location, orientation and XMP, for ``--keep-metadata``; None when nothing is left."""
    exif = image.getexif()
    for tag in PRIVATE_EXIF_TAGS:
        exif.pop(tag, None)
    return exif.tobytes() if len(exif) else None


def remove_stale_temporary_files(output_dir: Path) -> int:
    """Deletes the temporary files a killed run left in ``output_dir``; returns how many."""
    stale = list(output_dir.rglob(f".*{TEMPORARY_SUFFIX}")) if output_dir.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def save_image(image: Image.Image, target: Path, output_format: str, icc_profile: bytes | None = None,
               exif: bytes | None = None) -> None:
    """Writes ``image`` to ``target`` atomically, with no metadata other than the colour profile and ``exif``."""
    _, pil_format, options = OUTPUT_FORMATS[output_format]
    if pil_format == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    if icc_profile:
        options = {**options, "icc_profile": icc_profile}
    if exif:
        options = {**options, "exif": exif}
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TEMPORARY_SUFFIX, dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            image.save(stream, format=pil_format, **options)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
