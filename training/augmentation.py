"""What happens to protected images before a victim learns from them, differentiable so the generator trains through it.

- ``crop_and_flip``: the victim's standard augmentation: random crop with zero padding of 1/8 of the side (4 px at
  32×32) and horizontal flip, drawn per image.
- ``scraper_transforms``: the cheap defenses a scraper applies: grayscale and JPEG at a low quality (Liu et al.,
  "Image Shortcut Squeezing", ICML 2023, break most unlearnable noise with them), colour jitter (the benchmark's
  ``color-jitter`` defense, which undoes a per-class colour offset) and the random resized crop of photo pipelines
  (which rescales a fine spatial pattern). ``A+B`` chains two, as a photo pipeline does
  (``resized-crop+color-jitter``). The JPEG codec is kornia's differentiable one (Reich et al., "Differentiable
  JPEG: The Devil is in the Details", WACV 2024), so the min-min term can ask for noise that stays a shortcut after
  compression; kornia's colour jitter and crops are differentiable too.

Images are NCHW float tensors in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from kornia.augmentation import ColorJitter, RandomResizedCrop
from kornia.enhance import jpeg_codec_differentiable

from modeling_confounder.images import luma

SCRAPER_TRANSFORMS = ("grayscale", "jpeg", "color-jitter", "resized-crop")
COLOR_JITTER = (0.4, 0.4, 0.4, 0.1)  # brightness, contrast, saturation (±40 %) and hue (±0.1), drawn per image
RESIZED_CROP_SCALE = (0.35, 1.0)  # share of the area, as the benchmark's clothing victims crop


def check_transforms(transforms: Sequence[str]) -> None:
    """Raises ``ValueError`` naming the transforms in ``transforms`` (each one or a chain ``A+B``) that are not
    scraper transforms."""
    if unknown := sorted({part for name in transforms for part in name.split("+")} - set(SCRAPER_TRANSFORMS)):
        raise ValueError(f"unknown scraper transform(s) {unknown}: choose from {SCRAPER_TRANSFORMS} or chain them "
                         "with +")


def crop_and_flip(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image randomly cropped from its zero-padded self (padding 1/8 of the side) and flipped with
    probability 1/2; offsets, then flips are drawn from ``generator``."""
    pad = max(1, images.shape[-1] // 8)
    padded = F.pad(images, (pad, pad, pad, pad))
    offsets = torch.randint(0, 2 * pad + 1, (len(images), 2), generator=generator).to(images.device)
    flips = (torch.rand(len(images), generator=generator) < 0.5).to(images.device)
    # Two gathers for the whole batch, rows then columns: a loop over images costs a kernel launch per image on a GPU.
    (count, channels, height, width), device = images.shape, images.device
    rows = offsets[:, :1] + torch.arange(height, device=device)
    columns = offsets[:, 1:] + torch.arange(width, device=device)
    columns = torch.where(flips[:, None], columns.flip(-1), columns)
    cropped_rows = padded.gather(2, rows[:, None, :, None].expand(-1, channels, -1, padded.shape[-1]))
    return cropped_rows.gather(3, columns[:, None, None, :].expand(count, channels, height, width))


def scraper_transforms(images: torch.Tensor, transforms: Sequence[str], jpeg_quality: Sequence[float] = (10, 50),
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image as it is, or through one of ``transforms`` (uniformly drawn per image; a chain ``A+B`` applies
    A, then B; JPEG quality uniform in ``jpeg_quality``). Grayscale images (one channel) are compressed as luma.
    ``generator`` draws the choices and qualities; kornia's colour jitter and crops draw theirs from torch's global
    generator."""
    check_transforms(transforms)
    if not transforms:
        return images
    choice = torch.randint(0, len(transforms) + 1, (len(images),), generator=generator).to(images.device)
    qualities = torch.empty(len(images)).uniform_(*jpeg_quality, generator=generator).to(images.device)
    scraped = images
    for index, name in enumerate(transforms, 1):
        # Only the images that drew this transform go through it: JPEG is the costly part of a training step.
        chosen = choice == index
        if chosen.any():
            view, quality = images[chosen], qualities[chosen]
            for part in name.split("+"):
                view = scraper_view(part, view, quality)
            scraped = scraped.index_put((chosen,), view)
    return scraped


def scraper_view(name: str, images: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """``images`` in gray (as three equal channels for colour ones), colour-jittered (brightness and contrast only
    for gray ones), a random resized crop of each at its own size, or JPEG-compressed at per-image ``quality``."""
    gray = images.shape[1] == 1
    if name == "grayscale":
        return images if gray else luma(images).expand_as(images)
    if name == "color-jitter":
        return ColorJitter(*COLOR_JITTER[:2 if gray else 4], p=1.0)(images)
    if name == "resized-crop":
        return RandomResizedCrop(images.shape[-2:], scale=RESIZED_CROP_SCALE, p=1.0)(images)
    decoded = jpeg_codec_differentiable(images.expand(-1, 3, -1, -1) if gray else images, quality)
    return decoded[:, :1] if gray else decoded
