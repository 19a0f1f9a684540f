"""Image conversions: PIL modes, uint8 arrays and the float tensors the networks take, and adding noise to pixels.

Layouts: files and PIL images become uint8 HWC arrays (batches: NHWC) in L, LA, RGB or RGBA; the networks take
float NCHW tensors in [0, 1]. Noise is added as whole uint8 steps, so every pixel of a protected image differs from
the original by at most round(ε·255) levels. Alpha channels are never changed.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

# PIL modes kept as they are; everything else is converted to the closest of these first.
NATIVE_MODES = {"L", "LA", "RGB", "RGBA"}
CONVERTED_MODES = {"1": "L", "I;16": "L", "I;16B": "L", "I;16L": "L", "I": "L", "F": "L", "CMYK": "RGB",
                   "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB", "P": "RGBA", "PA": "RGBA", "RGBX": "RGB",
                   "RGBa": "RGBA", "La": "LA"}
ARRAY_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
"""ITU-R BT.601 luma weights of R, G and B."""


def pil_to_array(image: Image.Image) -> np.ndarray:
    """A PIL image as a uint8 HWC array in L, LA, RGB or RGBA (16-bit and palette images are converted)."""
    mode = image.mode
    if mode not in NATIVE_MODES:
        if mode.startswith("I"):
            # 16/32-bit integer images: scale to 8 bits instead of clipping everything above 255 to white.
            values = np.asarray(image, dtype=np.float64)
            peak = 65535.0 if mode.startswith("I;16") or values.max() > 255 else 255.0
            image = Image.fromarray(np.clip(values * (255.0 / peak) + 0.5, 0, 255).astype(np.uint8), "L")
        elif mode == "P" and "transparency" not in image.info:
            image = image.convert("RGB")
        else:
            image = image.convert(CONVERTED_MODES.get(mode, "RGB"))
    array = np.asarray(image, dtype=np.uint8)
    return array[:, :, None] if array.ndim == 2 else array


def array_to_pil(array: np.ndarray) -> Image.Image:
    """A uint8 HWC array with 1, 2, 3 or 4 channels as a PIL image in L, LA, RGB or RGBA."""
    mode = ARRAY_MODES[array.shape[-1]]
    return Image.fromarray(array[:, :, 0] if mode == "L" else array, mode)


def color_channels(channels: int) -> int:
    """The colour channels among ``channels`` (1 for L and LA, 3 for RGB and RGBA): the ones noise is added to."""
    return 1 if channels in (1, 2) else 3


def to_float(images: torch.Tensor, device: str | torch.device | None = None,
             dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 NHWC images as float NCHW in [0, 1] on ``device``, channels_last in memory (the fast layout for
    convolutions, and a view of NHWC data: nothing is copied to change the layout)."""
    return images.permute(0, 3, 1, 2).to(device, dtype) / 255


def luma(images: torch.Tensor) -> torch.Tensor:
    """NCHW RGB float images as their ITU-R BT.601 luma, N1HW."""
    return (images * torch.from_numpy(LUMA).to(images)[None, :, None, None]).sum(1, keepdim=True)


def match_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """NCHW float images with ``channels`` channels: gray becomes three equal channels, RGB its luma."""
    have = images.shape[1]
    if have == channels:
        return images
    if have == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1)
    if have == 3 and channels == 1:
        return luma(images)
    raise ValueError(f"cannot convert {have}-channel images to the {channels} channels this generator takes")


def add_noise(images: torch.Tensor, noise: torch.Tensor, epsilon: float) -> torch.Tensor:
    """uint8 NHWC ``images`` plus float NCHW ``noise`` as whole uint8 steps, within ±round(ε·255) and [0, 255].

    The noise goes to the colour channels only; alpha is kept. Noise with a different channel count than the
    colours (a grayscale generator on RGB, or an RGB one on gray) is averaged over its channels and added to each.
    """
    channels = color_channels(images.shape[-1])
    if noise.shape[1] != channels:
        noise = noise.mean(1, keepdim=True).expand(-1, channels, -1, -1)
    levels = round(epsilon * 255)
    steps = torch.round(noise.detach() * 255).clamp_(-levels, levels).to(torch.int16).permute(0, 2, 3, 1)
    protected = images.clone()
    color = images[..., :channels].to(torch.int16) + steps.to(images.device)
    protected[..., :channels] = color.clamp_(0, 255).to(torch.uint8)
    return protected
