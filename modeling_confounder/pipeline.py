"""``protect``: uint8 images in, protected uint8 images of the same kind, size and mode out.

The one place that checks protection's arguments, picks the device, batches images by size, bounds the pixels of
each forward pass, tiles large photos and rounds the noise into whole pixel levels. Grayscale images go through an
RGB generator as three equal channels (their noise is the channel mean), and RGB images through a grayscale
generator as their luma (the same noise is added to each channel).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from .generator import ConfounderGenerator, check_epsilon
from .images import add_noise, array_to_pil, color_channels, match_channels, pil_to_array, to_float
from .keys import Key, class_key, key_codes

ImageInput = np.ndarray | Image.Image | list[Image.Image]


def default_device() -> str:
    """"cuda" when a CUDA GPU is available, else "cpu"."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def protect(
    generator: ConfounderGenerator,
    images: ImageInput,
    labels: int | Sequence[int] | None = None,
    key: Key | None = None,
    epsilon: float | None = None,
    batch_size: int = 256,
    tile_size: int = 1024,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> ImageInput:
    """Protects images: returns ``images + δ`` rounded to uint8, of the same kind, size and mode.

    Args:
        generator: the ``ConfounderGenerator`` that makes the noise; it is moved to ``device`` in eval mode.
        images: a uint8 NHWC ndarray (C in 1, 2, 3, 4), a PIL image, or a list of PIL images.
        labels: one label per image (-1 for unknown), one label for all of them (an owner code), or None
            (label-free). With a keyed generator, class labels (any non-negative integers): each class gets its
            own key, derived from ``key`` and the label.
        key: the owner's secret (str, bytes or int) for a keyed generator (``is_keyed``): the same key gives all
            of an owner's photos the same shortcut. Required by keyed generators, refused by label generators.
        epsilon: L∞ bound in [0, 1] units; defaults to the generator's ε. The noise is rescaled, never clipped
            harder than this bound.
        batch_size: images per forward pass (same-size images are batched together).
        tile_size: a forward pass holds at most ``tile_size``² pixels: larger images are processed in
            overlapping tiles, which gives the same result as one pass.
        device: where to run; by default ``default_device()``.
        progress: show a tqdm progress bar.
    """
    epsilon = generator.config.epsilon if epsilon is None else check_epsilon(epsilon)
    if batch_size < 1 or tile_size < 64:
        raise ValueError(f"batch_size must be >= 1 and tile_size >= 64, got {batch_size} and {tile_size}")
    generator.to(device or default_device()).eval()
    count = len(images) if isinstance(images, (np.ndarray, list, tuple)) else 1
    codes = conditioning(generator, labels, key, count)
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 2, 3, 4):
            raise ValueError("expected a uint8 NHWC array with 1, 2, 3 or 4 channels, got "
                             f"dtype={images.dtype} shape={images.shape}; for one HWC image pass images[None]")
        return np.stack(protect_arrays(generator, list(images), codes, epsilon, batch_size, tile_size, progress))
    if isinstance(images, Image.Image):
        return array_to_pil(protect_arrays(generator, [pil_to_array(images)], codes, epsilon, batch_size,
                                           tile_size, progress)[0])
    if isinstance(images, (list, tuple)) and all(isinstance(image, Image.Image) for image in images):
        arrays = [pil_to_array(image) for image in images]
        protected = protect_arrays(generator, arrays, codes, epsilon, batch_size, tile_size, progress)
        return [array_to_pil(array) for array in protected]
    raise TypeError("protect() takes a uint8 NHWC numpy array, a PIL image or a list of PIL images, "
                    f"got {type(images).__name__}")


def is_keyed(generator: ConfounderGenerator) -> bool:
    """Whether ``generator`` is conditioned on owner keys (``protect(..., key=...)``) rather than labels."""
    return generator.config.key_dim > 0


def conditioning(generator: ConfounderGenerator, labels: int | Sequence[int] | None, key: Key | None,
                 count: int) -> torch.Tensor:
    """What each of ``count`` images is conditioned on: label codes, or key codes for a keyed generator."""
    if not is_keyed(generator):
        if key is not None:
            raise ValueError("this generator is conditioned on labels (owner codes), not keys: pass labels=..., "
                             "or load a keyed generator (modeling_confounder.DEFAULT_MODEL) to protect with a key")
        return generator.label_codes(labels, count).cpu()
    if key is None:
        raise ValueError("this generator is keyed: pass key=... (your secret, the same for all your photos; "
                         "modeling_confounder.new_key() makes one)")
    if labels is None:
        return key_codes([key] * count, generator.config.key_dim)
    labels = np.asarray(labels).reshape(-1)
    if labels.size == 1:
        labels = labels.repeat(count)
    if len(labels) != count or labels.dtype.kind not in "iu" or (labels < 0).any():
        raise ValueError(f"with a key, labels are class indices >= 0: one per image or one for all {count} "
                         "images, each class then gets its own key derived from yours")
    return key_codes([class_key(key, label) for label in labels.tolist()], generator.config.key_dim)


def protect_arrays(
    generator: ConfounderGenerator,
    arrays: list[np.ndarray],
    codes: torch.Tensor,
    epsilon: float,
    batch_size: int,
    tile_size: int,
    progress: bool,
) -> list[np.ndarray]:
    """Protects uint8 HWC arrays (1-4 channels) on the generator's device; same-size images share passes."""
    by_size = defaultdict(list)
    for index, array in enumerate(arrays):
        by_size[array.shape].append(index)

    protected: list[np.ndarray] = [None] * len(arrays)
    with torch.inference_mode(), tqdm(total=len(arrays), disable=not progress, unit="img") as bar:
        for (height, width, _), indices in by_size.items():
            # The pixel budget of a pass: a batch of large photos needs no more memory than one tile.
            per_pass = max(1, min(batch_size, tile_size * tile_size // (height * width)))
            for start in range(0, len(indices), per_pass):
                chunk = indices[start:start + per_pass]
                batch = torch.from_numpy(np.stack([arrays[i] for i in chunk]))
                noise = batch_noise(generator, batch, codes[chunk], epsilon, tile_size)
                for i, image in zip(chunk, add_noise(batch, noise, epsilon).numpy()):
                    protected[i] = image
                bar.update(len(chunk))
    return protected


def batch_noise(generator: ConfounderGenerator, batch: torch.Tensor, codes: torch.Tensor, epsilon: float,
                tile_size: int) -> torch.Tensor:
    """The generator's float NCHW noise for the colour channels of a uint8 NHWC batch, in the generator's channels."""
    colors = to_float(batch[..., :color_channels(batch.shape[-1])], generator.device, generator.dtype)
    images = match_channels(colors, generator.config.in_channels).contiguous(memory_format=torch.channels_last)
    codes = generator.fill_unknown_labels(images, codes.to(generator.device))
    return noise_in_tiles(generator, images, codes, epsilon, tile_size)


def noise_in_tiles(generator: ConfounderGenerator, images: torch.Tensor, codes: torch.Tensor,
                   epsilon: float | None, tile_size: int) -> torch.Tensor:
    """``generator.noise(images, codes, epsilon)`` computed tile by tile, for photos over ``tile_size``² pixels.

    Each tile carries a halo of the generator's receptive radius, so the result equals a single pass.
    """
    height, width = images.shape[-2:]
    if height * width <= tile_size * tile_size:
        return generator.noise(images, codes, epsilon)
    # Tiles start on even pixels so the stride-2 stem sees the same grid as a single pass would.
    halo = 2 * math.ceil(generator.receptive_radius / 2)
    step = max(2, tile_size - 2 * halo) // 2 * 2
    noise = torch.empty_like(images)
    for top in range(0, height, step):
        for left in range(0, width, step):
            y0, x0 = max(0, top - halo), max(0, left - halo)
            y1, x1 = min(height, top + step + halo), min(width, left + step + halo)
            tile_noise = generator.noise(images[..., y0:y1, x0:x1], codes, epsilon, origin=(y0, x0))
            noise[..., top:top + step, left:left + step] = tile_noise[
                ..., top - y0:top - y0 + step, left - x0:left - x0 + step]
    return noise
