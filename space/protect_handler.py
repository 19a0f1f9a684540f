"""What the ConfounderGAN Space does with uploaded photos: plain Python (no Gradio), so tests call it directly.

ConfounderGAN (Tian et al., "ConfounderGAN: Protecting Image Data Privacy with Causal Confounder", NeurIPS 2022)
adds per-image noise δ = G(x, y) with |δ| ≤ ε to a photo; a classifier trained on protected photos learns the noise
instead of the content. ``app.py`` lays out the page and turns ``InputError`` into Gradio messages.

Conventions (the same as the ``confounder`` command line):

- ε is given in pixel levels out of 255 (2–16, default 8); every protected pixel differs from the original by at
  most round(ε) levels, and the alpha channel is never changed.
- A keyed generator protects every photo of a request with the owner's *key*, a secret text: the same key gives
  all of an owner's photos the same shortcut. The key is used for the request only: it is never logged, stored,
  cached or written into any output, report or file name.
- A label generator (the CIFAR-10 one) takes an *owner code* instead: "one owner" gives every photo of a request
  the same label in 0..num_classes-1, "label-free" the generator's no-label code.
- The original is the uploaded file read with its EXIF orientation applied and converted to 8 bits (L, LA, RGB or
  RGBA). Outputs are PNG (lossy formats wipe out most of the noise) without EXIF/GPS/camera metadata; the ICC
  colour profile is kept so colours do not shift.
- The amplified noise maps δ from [-ε, ε] to [0, 255], so mid-gray means "unchanged".
"""

from __future__ import annotations

import math
import os
import re
import secrets
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from modeling_confounder import (
    DEFAULT_MODEL,
    ConfounderGenerator,
    SourceImage,
    UnreadableImage,
    array_to_pil,
    image_quality,
    is_keyed,
    pil_to_array,
    protect,
    read_image,
    save_image,
)

MAX_IMAGES = 32
"""Photos per request: enough for an album, few enough that one request cannot hold the queue for long."""
MAX_FILE_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 50_000_000
EPSILON_MIN, EPSILON_MAX, EPSILON_DEFAULT = 2, 16, 8
ONE_OWNER, LABEL_FREE = "one owner", "label-free"
PREVIEW_SIDE = 1024
"""Longest side of the images shown on the page; downloads are always full size."""
SUPPORTED_FORMATS = "PNG, JPEG, WebP, TIFF, BMP or GIF"
MODEL_ENVIRONMENT_VARIABLE = "CONFOUNDER_MODEL"
"""The generator the app offers as "default": the keyed weights shipped with the package."""


class InputError(ValueError):
    """A problem with the request that the user can fix; its message is shown to them as it is."""


@dataclass(frozen=True)
class ProtectedPhoto:
    """One protected photo: the full-size PNG to download, the three images shown on the page, and its quality."""

    source_name: str
    width: int
    height: int
    protected: Path
    original_preview: Path
    protected_preview: Path
    noise_preview: Path
    psnr: float
    ssim: float | None
    max_change: int
    downscaled: bool


@dataclass(frozen=True)
class ProtectionResult:
    """Everything one request produced; ``skipped`` holds one message per uploaded file that was not protected."""

    photos: list[ProtectedPhoto]
    skipped: list[str]
    archive: Path
    owner_code: int | None
    epsilon: float
    generator: str
    keyed: bool = False
    """Protected with the owner's key (which the result never holds)."""


def generator_sources(specs: Iterable[str] = (), environment: str | None = None) -> dict[str, str]:
    """The generators the app offers: display name -> local folder or Hub id; "default" comes first.

    Each spec (from ``CONFOUNDER_MODEL``, comma separated, then ``--model``) is ``NAME=PATH_OR_HUB_ID``, which adds
    a generator or replaces the one of that name, or a bare ``PATH_OR_HUB_ID``, which replaces "default"
    (``DEFAULT_MODEL``, the keyed weights shipped with the package).
    """
    if environment is None:
        environment = os.environ.get(MODEL_ENVIRONMENT_VARIABLE, "")
    sources = {"default": DEFAULT_MODEL}
    for spec in [*environment.split(","), *specs]:
        spec = spec.strip()
        if not spec:
            continue
        # Only a plain word counts as a name, so that a path such as /data/run=3/generator stays a path.
        named = re.fullmatch(r"([\w.-]+)=(.+)", spec)
        name, source = (named.group(1), named.group(2).strip()) if named else ("default", spec)
        sources[name] = source
    return sources


@cache
def load_generator(source: str) -> ConfounderGenerator:
    """Loads a generator once per process; later requests reuse it (``from_pretrained`` raises ``OSError``)."""
    return ConfounderGenerator.from_pretrained(source).eval()


def new_owner_code(generator: ConfounderGenerator) -> int:
    """A fresh owner code for ``generator``: uniform in 0..num_classes-1."""
    return secrets.randbelow(generator.config.num_classes)


def resolve_owner_code(mode: str, owner_code: str | float | None, generator: ConfounderGenerator) -> int | None:
    """The label for every photo of a request: the owner code (a new one if none was typed), or None (label-free).

    ``owner_code`` is what the page's text field or an API caller sent: empty or None picks a new code.
    """
    if mode == LABEL_FREE:
        return None
    if mode != ONE_OWNER:
        raise InputError(f"Choose the mode {ONE_OWNER!r} or {LABEL_FREE!r}, not {mode!r}.")
    text = "" if owner_code is None else str(owner_code).strip()
    if not text:
        return new_owner_code(generator)
    highest = generator.config.num_classes - 1
    try:
        code = float(text)
    except ValueError:
        code = math.nan
    if not (code.is_integer() and 0 <= code <= highest):
        raise InputError(f"The owner code must be a whole number from 0 to {highest} for this generator, "
                         f"got {text!r}.")
    return int(code)


def resolve_key(key: str | None, generator: ConfounderGenerator) -> str | None:
    """The key a keyed generator protects with (surrounding spaces dropped), or None for a label generator."""
    if not is_keyed(generator):
        return None
    text = "" if key is None else str(key).strip()
    if not text:
        raise InputError("Enter your key, or press New key to make one (and keep it: use it for all your photos).")
    return text


def resolve_request(mode: str, owner_code: str | float | None, key: str | None,
                    generator: ConfounderGenerator) -> tuple[int | None, str | None]:
    """The owner code and the key of a request: a keyed generator takes only the key, a label generator only the
    code (``resolve_owner_code``)."""
    key = resolve_key(key, generator)
    return (None, key) if key is not None else (resolve_owner_code(mode, owner_code, generator), None)


def check_epsilon(epsilon: float | None) -> float:
    """ε in pixel levels out of 255, checked against the range the app offers."""
    if epsilon is None or not EPSILON_MIN <= epsilon <= EPSILON_MAX:
        raise InputError(f"The strength ε must be between {EPSILON_MIN} and {EPSILON_MAX} (pixel levels out of "
                         f"255), got {epsilon}.")
    return float(epsilon)


def read_photo(path: Path) -> SourceImage:
    """Reads one upload with its EXIF orientation applied; raises ``InputError`` naming the file if it cannot."""
    name, size = path.name, path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise InputError(f"{name}: {size / 2**20:.1f} MB is over the limit of {MAX_FILE_BYTES // 2**20} MB per "
                         "photo; export a smaller copy and upload that.")
    try:
        return read_image(path, MAX_PIXELS)
    except UnreadableImage as error:
        if error.kind == "too large":
            raise InputError(f"{name}: {error}.") from None
        if error.kind == "not an image" and Path(name).suffix.lower() in (".heic", ".heif"):
            raise InputError(f"{name}: HEIC/HEIF photos cannot be read here; export it as JPEG or PNG "
                             "(on an iPhone: Settings > Camera > Formats > Most Compatible).") from None
        if error.kind in ("not an image", "empty"):
            raise InputError(f"{name}: not an image this app can read; upload {SUPPORTED_FORMATS}.") from None
        raise InputError(f"{name}: the file looks damaged or truncated ({error}).") from None


def amplified_noise(original: np.ndarray, protected: np.ndarray, bound: int) -> np.ndarray:
    """The colour-channel noise δ = protected - original mapped from [-bound, bound] to [0, 255] (128 means 0)."""
    channels = 1 if original.shape[-1] in (1, 2) else 3
    delta = protected[..., :channels].astype(np.int16) - original[..., :channels]
    return np.clip(np.rint((delta / bound + 1) * 127.5), 0, 255).astype(np.uint8)


def preview(image: Image.Image, resample: Image.Resampling) -> Image.Image:
    """``image`` shrunk to at most ``PREVIEW_SIDE`` on its longest side (unchanged if already that small)."""
    scale = PREVIEW_SIDE / max(image.size)
    if scale >= 1:
        return image
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), resample)


def output_stem(name: str, taken: set[str]) -> str:
    """A file-system-safe stem from an upload's name, unique within one request."""
    stem = re.sub(r"[^\w.-]+", "_", Path(name).stem).strip("._") or "photo"
    unique, number = stem, 2
    while unique.lower() in taken:
        unique, number = f"{stem}-{number}", number + 1
    taken.add(unique.lower())
    return unique


def write_archive(files: Sequence[Path], target: Path) -> Path:
    """A zip of ``files`` under their own names; stored, not deflated, because PNG is already compressed."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as archive:
        for file in files:
            archive.write(file, arcname=file.name)
    return target


def protect_photo(source: SourceImage, name: str, stem: str, generator: ConfounderGenerator, output_dir: Path,
                  epsilon: float, owner_code: int | None, key: str | None) -> ProtectedPhoto:
    """Protects one photo as read, measures it and writes its PNG and its three previews, named after ``stem``."""
    image, icc_profile = source.image, source.icc_profile
    original = pil_to_array(image)
    protected = protect(generator, original[None], labels=owner_code, key=key, epsilon=epsilon / 255)[0]
    noise = amplified_noise(original, protected, round(epsilon))
    psnr, ssim = image_quality(original, protected)

    protected_dir, preview_dir = output_dir / "protected", output_dir / "previews"
    protected_image = array_to_pil(protected)
    protected_file = protected_dir / f"{stem}-protected.png"
    save_image(protected_image, protected_file, "png", icc_profile)
    downscaled = max(image.size) > PREVIEW_SIDE
    original_preview = preview_dir / f"{stem}-original.png"
    save_image(preview(array_to_pil(original), Image.Resampling.LANCZOS), original_preview, "png", icc_profile)
    protected_preview = protected_file
    if downscaled:
        protected_preview = preview_dir / f"{stem}-protected-preview.png"
        save_image(preview(protected_image, Image.Resampling.LANCZOS), protected_preview, "png", icc_profile)
    # Nearest-neighbour keeps real per-pixel noise values; averaging would blur the noise towards gray.
    noise_preview = preview_dir / f"{stem}-noise.png"
    save_image(preview(array_to_pil(noise), Image.Resampling.NEAREST), noise_preview, "png")
    max_change = int(np.abs(protected.astype(np.int16) - original).max())
    return ProtectedPhoto(name, image.width, image.height, protected_file, original_preview, protected_preview,
                          noise_preview, psnr, ssim, max_change, downscaled)


def protect_photos(
    uploads: Sequence[str | Path],
    generator: ConfounderGenerator,
    output_dir: Path,
    epsilon: float = EPSILON_DEFAULT,
    owner_code: int | None = None,
    generator_name: str = "default",
    progress: Callable[[int, int, str], None] | None = None,
    key: str | None = None,
) -> ProtectionResult:
    """Protects uploaded photos one at a time (bounded memory) and writes everything to show or download.

    Args:
        uploads: image files; each is named on the page by its file name.
        generator: the ConfounderGenerator to use.
        output_dir: an empty folder for the outputs (the app uses one per request inside Gradio's cache).
        epsilon: the L∞ bound in pixel levels out of 255, ``EPSILON_MIN``..``EPSILON_MAX``.
        owner_code: for a label generator, one label for every photo (see ``resolve_owner_code``), or None for
            label-free protection.
        generator_name: how the page names the generator.
        progress: called as ``progress(done, total, name)`` before each photo.
        key: for a keyed generator, the owner's key (required, see ``resolve_key``); used, never kept.

    Files that cannot be protected are skipped with a message in ``skipped``; ``InputError`` is raised when the
    request itself is wrong or no photo could be protected.
    """
    epsilon = check_epsilon(epsilon)
    if is_keyed(generator):
        key = resolve_key(key, generator)
    elif key is not None:
        raise InputError("This generator takes an owner code, not a key.")
    if not uploads:
        raise InputError(f"Upload at least one photo ({SUPPORTED_FORMATS}).")
    if len(uploads) > MAX_IMAGES:
        raise InputError(f"{len(uploads)} photos were uploaded; at most {MAX_IMAGES} can be protected at once. "
                         f"Please send them in batches of up to {MAX_IMAGES}.")
    photos: list[ProtectedPhoto] = []
    skipped: list[str] = []
    taken: set[str] = set()
    for done, upload in enumerate(uploads):
        path = Path(upload)
        if progress is not None:
            progress(done, len(uploads), path.name)
        try:
            source = read_photo(path)
        except InputError as error:
            skipped.append(str(error))
            continue
        photos.append(protect_photo(source, path.name, output_stem(path.name, taken), generator, output_dir, epsilon,
                                    owner_code, key))
    if not photos:
        raise InputError("None of the uploaded files could be protected:\n" + "\n".join(skipped))
    archive = write_archive([photo.protected for photo in photos], output_dir / "protected-photos.zip")
    return ProtectionResult(photos, skipped, archive, owner_code, epsilon, generator_name, keyed=key is not None)
