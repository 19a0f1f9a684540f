"""Protection as a photo's owner applies it, and the photo as a scraper then takes it: the benchmark's round trip
through full-size photos.

The benchmark's methods make their noise at its working resolution, on each photo's centre square resized
(``training.data.to_array``). An owner publishes the whole photo: the noise is resized (bilinear) to the photo's
centre square and added there, and the sum is rounded to whole levels, as a PNG stores it. Bilinear interpolation
only averages neighbouring values, so no pixel of the photo changes by more than ε. A scraper then takes the
published photo and resizes it exactly as the clean photos were resized, so clean and protected images go through
one path, and whatever the noise loses in the two resizings, the victim does not see.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from modeling_confounder.hub_datasets import find_columns, load_split
from modeling_confounder.images import array_to_pil, pil_to_array

from .data import to_array


def centre_square(photo: Image.Image) -> tuple[slice, slice]:
    """The rows and columns of ``photo``'s centre square, the part ``training.data.to_array`` keeps."""
    side = min(photo.size)
    top, left = (photo.height - side) // 2, (photo.width - side) // 2
    return slice(top, top + side), slice(left, left + side)


def publish(photo: Image.Image, noise: torch.Tensor) -> Image.Image:
    """``photo`` with ``noise`` (float CHW, in levels, of any square size) resized to the photo's centre square
    and added there, rounded to whole levels: what its owner publishes."""
    array = pil_to_array(photo).astype(np.float32)
    rows, columns = centre_square(photo)
    side = min(photo.size)
    resized = F.interpolate(noise[None], size=(side, side), mode="bilinear", align_corners=False)[0]
    array[rows, columns] += resized.permute(1, 2, 0).numpy()
    return array_to_pil(np.clip(np.round(array), 0, 255).astype(np.uint8))


@dataclass(frozen=True)
class Photos:
    """The full-size photos behind a benchmark's training images: rows ``rows`` of ``split`` of
    ``dataset_name``, in order, the i-th being the photo of training image i."""

    dataset_name: str
    split: str
    image_column: str | None
    rows: tuple[int, int] | None

    def round_trip(self, clean: torch.Tensor, protected: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """What a scraper trains on after each photo's owner published it with the noise ``protected - clean``
        (uint8 NHWC at the working resolution), as uint8 NHWC at that resolution, and what the published photos
        changed: their largest change in levels (``linf_pixels``) and mean PSNR in dB over the centre squares."""
        dataset = load_split(self.dataset_name, self.split)
        column = find_columns(dataset, self.image_column, None)[0]
        start = 0 if self.rows is None else self.rows[0]
        photos = dataset.select(range(start, start + len(clean))).select_columns([column])
        noise = (protected.to(torch.float32) - clean.to(torch.float32)).permute(0, 3, 1, 2)
        mode = "L" if clean.shape[-1] == 1 else "RGB"
        scraped, largest, psnr = [], 0, []
        for index, row in enumerate(tqdm(photos, desc="publishing photos", unit="photo", leave=False)):
            photo = row[column].convert(mode)
            published = publish(photo, noise[index])
            change = (pil_to_array(published).astype(np.float32) - pil_to_array(photo))[centre_square(photo)]
            largest = max(largest, int(np.abs(change).max()))
            psnr.append(10 * np.log10(255 ** 2 / max(float((change ** 2).mean()), 1e-10)))
            scraped.append(to_array(published, clean.shape[1], clean.shape[-1]))
        return torch.from_numpy(np.stack(scraped)), {"linf_pixels": largest, "psnr_native": float(np.mean(psnr))}
