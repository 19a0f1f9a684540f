"""🤗 Datasets helpers shared by training, evaluation and dataset protection.

Image-classification datasets come from the Hub (``"uoft-cs/cifar10"``), from a local folder that
``datasets.load_dataset`` reads (``"../shared/data/cifar10"``), or from a ``save_to_disk`` folder. Images become
uint8 NHWC tensors; labels a LongTensor. Columns are found by their feature type when not named.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch
from PIL import Image

from .protect import pil_to_array


def load_split(name_or_path: str, split: str) -> datasets.Dataset:
    """One split of a Hub dataset, a local dataset folder, or a ``save_to_disk`` folder."""
    path = Path(name_or_path)
    if path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
        loaded = datasets.load_from_disk(str(path))
    else:
        loaded = datasets.load_dataset(name_or_path, split=split)
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise ValueError(f"{name_or_path} has no split {split!r}; it has {sorted(loaded)}")
        loaded = loaded[split]
    if len(loaded) == 0:
        raise ValueError(f"split {split!r} of {name_or_path} is empty")
    return loaded


def find_columns(dataset: datasets.Dataset, image_column: str | None, label_column: str | None,
                 need_label: bool = True) -> tuple[str, str | None]:
    """The image and label column names: the given ones (checked), else the first Image / ClassLabel feature."""
    features = dataset.features
    if image_column is None:
        image_column = next((name for name, feature in features.items() if isinstance(feature, datasets.Image)),
                            None)
    if image_column not in features:
        raise ValueError(f"no image column {image_column!r}; columns are {list(features)} "
                         "(choose one with --image_column_name)")
    if label_column is None:
        label_column = next((name for name, feature in features.items()
                             if isinstance(feature, datasets.ClassLabel)),
                            next((name for name in ("label", "labels") if name in features), None))
    if need_label and label_column not in features:
        raise ValueError(f"no label column {label_column!r}; columns are {list(features)} "
                         "(choose one with --label_column_name)")
    return image_column, label_column


def count_classes(dataset: datasets.Dataset, label_column: str) -> int:
    feature = dataset.features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        return feature.num_classes
    return int(max(dataset[label_column])) + 1


def to_array(image: Image.Image, resolution: int | None, channels: int) -> np.ndarray:
    """A PIL image as uint8 HWC with ``channels`` colour channels, centre-cropped and resized to ``resolution``."""
    image = image.convert("L" if channels == 1 else "RGB")
    if resolution is not None and image.size != (resolution, resolution):
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image = image.crop((left, top, left + side, top + side)).resize((resolution, resolution), Image.BICUBIC)
    return pil_to_array(image)


@dataclass
class ImageClassificationData:
    """A whole split in memory: ``images`` uint8 (N, H, W, C), ``labels`` long (N,)."""

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int

    @property
    def channels(self) -> int:
        return self.images.shape[-1]

    def float_images(self, index: torch.Tensor | slice) -> torch.Tensor:
        """NCHW float in [0, 1]."""
        return self.images[index].permute(0, 3, 1, 2).float().div_(255)


def load_classification_data(
    name_or_path: str,
    split: str,
    image_column: str | None = None,
    label_column: str | None = None,
    rows: tuple[int, int] | None = None,
    resolution: int | None = None,
    channels: int | None = None,
    num_classes: int | None = None,
) -> ImageClassificationData:
    """Loads rows [start, stop) of a split into memory; every image gets the same size and channel count.

    ``channels`` defaults to 1 when the first image is grayscale, else 3; ``resolution`` defaults to the first
    image's size when all images share it (and must be given otherwise).
    """
    dataset = load_split(name_or_path, split)
    image_column, label_column = find_columns(dataset, image_column, label_column)
    if rows is not None:
        start, stop = rows
        if not 0 <= start < min(stop, len(dataset)):
            raise ValueError(f"rows {start}:{stop} select nothing from a split of {len(dataset)} rows")
        dataset = dataset.select(range(start, min(stop, len(dataset))))
    num_classes = num_classes or count_classes(dataset, label_column)
    labels = torch.as_tensor(dataset[label_column], dtype=torch.long)
    bad = torch.nonzero((labels < 0) | (labels >= num_classes)).flatten()
    if len(bad):
        raise ValueError(f"row {bad[0].item()} of {name_or_path}:{split} has label {labels[bad[0]].item()}, "
                         f"outside [0, {num_classes - 1}]")
    images = []
    for index, image in enumerate(dataset[image_column]):
        if channels is None:
            channels = 1 if image.mode in ("L", "LA", "I", "I;16", "1") else 3
        array = to_array(image, resolution, channels)
        if images and array.shape != images[0].shape:
            raise ValueError(f"row {index} has size {array.shape[:2]} but row 0 has {images[0].shape[:2]}: "
                             "pass --resolution to resize every image to one size")
        images.append(array)
    return ImageClassificationData(torch.from_numpy(np.stack(images)), labels, num_classes)
