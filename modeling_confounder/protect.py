"""Protect uint8 images (ndarrays or PIL images) with a ``ConfounderGenerator``: the engine behind ``protect``.

Images are batched by size, run through the generator under ``torch.inference_mode()`` and rounded back to
uint8 so that every pixel differs from the input by at most round(ε·255). Alpha channels are never touched.
Grayscale images go through an RGB generator as three equal channels (their noise is the channel mean), and RGB
images through a grayscale generator as their luma (the same noise is added to each channel).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Union

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from .generator import ConfounderGenerator

ImageInput = Union[np.ndarray, Image.Image, list[Image.Image]]

# PIL modes kept as they are; everything else is converted to the closest of these first.
NATIVE_MODES = {"L": "L", "LA": "LA", "RGB": "RGB", "RGBA": "RGBA"}
CONVERTED_MODES = {"1": "L", "I;16": "L", "I;16B": "L", "I;16L": "L", "I": "L", "F": "L", "CMYK": "RGB",
                   "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB", "P": "RGBA", "PA": "RGBA", "RGBX": "RGB",
                   "RGBa": "RGBA", "La": "LA"}
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def pil_to_array(image: Image.Image) -> np.ndarray:
    """A PIL image as a uint8 HWC array in L, LA, RGB or RGBA (16-bit and palette images are converted)."""
    mode = image.mode
    if mode not in NATIVE_MODES:
        if mode == "P" and "transparency" not in image.info:
            target = "RGB"
        else:
            target = CONVERTED_MODES.get(mode, "RGB")
        if mode.startswith("I"):
            # 16/32-bit integer images: scale to 8 bits instead of clipping everything above 255 to white.
            values = np.asarray(image, dtype=np.float64)
            peak = 65535.0 if mode.startswith("I;16") or values.max() > 255 else 255.0
            image = Image.fromarray(np.clip(values * (255.0 / peak) + 0.5, 0, 255).astype(np.uint8), "L")
        else:
            image = image.convert(target)
    array = np.asarray(image, dtype=np.uint8)
    return array[:, :, None] if array.ndim == 2 else array


def array_to_pil(array: np.ndarray) -> Image.Image:
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[array.shape[-1]]
    return Image.fromarray(array[:, :, 0] if mode == "L" else array, mode)


def protect_images(
    generator: ConfounderGenerator,
    images: ImageInput,
    labels: int | Sequence[int] | None,
    epsilon: float | None,
    batch_size: int,
    tile_size: int,
    progress: bool,
) -> ImageInput:
    """Dispatches on the input kind and returns the same kind; see ``ConfounderGenerator.protect``."""
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 2, 3, 4):
            raise ValueError("expected a uint8 NHWC array with 1, 2, 3 or 4 channels, got "
                             f"dtype={images.dtype} shape={images.shape}; for one HWC image pass images[None]")
        return np.stack(protect_arrays(generator, list(images), labels, epsilon, batch_size, tile_size, progress))
    if isinstance(images, Image.Image):
        return protect_images(generator, [images], labels, epsilon, batch_size, tile_size, progress)[0]
    if isinstance(images, (list, tuple)) and all(isinstance(image, Image.Image) for image in images):
        arrays = [pil_to_array(image) for image in images]
        protected = protect_arrays(generator, arrays, labels, epsilon, batch_size, tile_size, progress)
        return [array_to_pil(array) for array in protected]
    raise TypeError("protect() takes a uint8 NHWC numpy array, a PIL image or a list of PIL images, "
                    f"got {type(images).__name__}")


def protect_arrays(
    generator: ConfounderGenerator,
    arrays: list[np.ndarray],
    labels: int | Sequence[int] | None,
    epsilon: float | None,
    batch_size: int,
    tile_size: int,
    progress: bool,
) -> list[np.ndarray]:
    """Protects uint8 HWC arrays (1-4 channels); same-size images share forward passes."""
    if batch_size < 1 or tile_size < 64:
        raise ValueError(f"batch_size must be >= 1 and tile_size >= 64, got {batch_size} and {tile_size}")
    epsilon = generator.config.epsilon if epsilon is None else epsilon
    max_step = round(epsilon * 255)
    codes = generator.label_codes(labels, len(arrays)).cpu()
    by_size = defaultdict(list)
    for index, array in enumerate(arrays):
        by_size[array.shape].append(index)

    protected: list[np.ndarray] = [None] * len(arrays)
    with torch.inference_mode(), tqdm(total=len(arrays), disable=not progress, unit="img") as bar:
        for (height, width, _), indices in by_size.items():
            # Bound the pixels per pass so that a batch of large photos needs no more memory than one tile.
            per_pass = max(1, min(batch_size, tile_size * tile_size // (height * width)))
            for start in range(0, len(indices), per_pass):
                chunk = indices[start:start + per_pass]
                batch = np.stack([arrays[i] for i in chunk])
                steps = noise_steps(generator, batch, codes[chunk], epsilon, max_step, tile_size)
                color = batch[..., :steps.shape[-1]].astype(np.int16) + steps
                batch[..., :steps.shape[-1]] = np.clip(color, 0, 255)
                for i, image in zip(chunk, batch):
                    protected[i] = image
                bar.update(len(chunk))
    return protected


def luma(images: torch.Tensor) -> torch.Tensor:
    """NCHW RGB float images as their ITU-R BT.601 luma, N1HW."""
    return (images * torch.from_numpy(LUMA).to(images)[None, :, None, None]).sum(1, keepdim=True)


def noise_steps(
    generator: ConfounderGenerator,
    batch: np.ndarray,
    codes: torch.Tensor,
    epsilon: float,
    max_step: int,
    tile_size: int,
) -> np.ndarray:
    """The noise for a uint8 NHWC batch, in whole uint8 steps in [-max_step, max_step], for its colour channels."""
    color_channels = 1 if batch.shape[-1] in (1, 2) else 3
    # NHWC -> NCHW view: already channels_last in memory, the fast layout for CPU convolutions.
    images = torch.from_numpy(batch[..., :color_channels]).permute(0, 3, 1, 2)
    images = images.to(generator.device, generator.dtype) / 255
    wanted = generator.config.in_channels
    if color_channels == 1 and wanted == 3:
        images = images.expand(-1, 3, -1, -1)
    elif color_channels == 3 and wanted == 1:
        images = luma(images)
    elif color_channels != wanted:
        raise ValueError(f"this generator takes {wanted}-channel images; cannot convert {color_channels}")
    images = images.contiguous(memory_format=torch.channels_last)
    codes = generator.fill_unknown_labels(images, codes.to(generator.device))
    noise = generator.noise_in_tiles(images, codes, epsilon, tile_size)
    if noise.shape[1] != color_channels:
        noise = noise.mean(1, keepdim=True).expand(-1, color_channels, -1, -1)
    steps = torch.round(noise * 255).clamp_(-max_step, max_step)
    return steps.to(torch.int16).permute(0, 2, 3, 1).cpu().numpy()
