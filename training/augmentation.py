"""The victim's standard augmentation, differentiable so that the generator can train through it.

Random crop with zero padding of 1/8 of the side (4 px at 32×32) and horizontal flip, drawn per image.
Images are NCHW float tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def crop_and_flip(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    size = images.shape[-1]
    pad = max(1, size // 8)
    padded = F.pad(images, (pad, pad, pad, pad))
    offsets = torch.randint(0, 2 * pad + 1, (len(images), 2), generator=generator)
    flips = torch.rand(len(images), generator=generator) < 0.5
    crops = [padded[i, :, y:y + images.shape[-2], x:x + size] for i, (y, x) in enumerate(offsets.tolist())]
    return torch.stack([crop.flip(-1) if flip else crop for crop, flip in zip(crops, flips.tolist())])
