"""Image-classification splits in memory for training and evaluation, and the data flags of every script.

Datasets come from the Hub (``"uoft-cs/cifar10"``), from a local folder that ``datasets.load_dataset`` reads
(``"../shared/data/cifar10"``), or from a ``save_to_disk`` folder (see ``modeling_confounder.hub_datasets``).
Images become uint8 NHWC tensors, labels a LongTensor. Bad input fails while loading, before any training, with a
``ValueError`` that names what to fix: an empty split, a missing column, a label outside the classes or an image
that does not decode (with its split, row and column).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import datasets
import numpy as np
import torch
from PIL import Image

from modeling_confounder.hub_datasets import decode_image, find_columns, load_split
from modeling_confounder.images import pil_to_array, to_float


def parse_rows(text: str) -> tuple[int, int]:
    """``START:STOP`` as a pair of row indices (rows START to STOP - 1)."""
    try:
        start, stop = (int(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:STOP (e.g. 0:25000), got {text!r}") from None
    return start, stop


def add_data_arguments(parser: argparse.ArgumentParser, test_split: bool = True) -> None:
    """The data flags of the training scripts; ``test_split=False`` leaves out the test split's."""
    data = parser.add_argument_group("data")
    data.add_argument("--dataset_name", required=True,
                      help="Hub id, local folder that datasets.load_dataset reads, or a save_to_disk folder")
    data.add_argument("--image_column_name", default=None, help="the image column (default: the first Image column)")
    data.add_argument("--label_column_name", default=None,
                      help="the label column (default: the first ClassLabel column)")
    data.add_argument("--train_split", default="train", help="the split to train on")
    data.add_argument("--train_rows", type=parse_rows, default=None, metavar="START:STOP",
                      help="train on rows START to STOP - 1 of the train split (default: all)")
    if test_split:
        data.add_argument("--test_split", default="test", help="the split to test on (clean images)")
        data.add_argument("--test_rows", type=parse_rows, default=None, metavar="START:STOP",
                          help="test on rows START to STOP - 1 of the test split (default: all)")
    data.add_argument("--resolution", type=int, default=None,
                      help="centre-crop and resize to this square size (default: the images' own size)")


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
        return to_float(self.images[index])

    def split_off(self, count: int) -> tuple[ImageClassificationData, ImageClassificationData | None]:
        """The first rows and the last ``count`` rows (None when ``count`` is 0): a validation split carved from
        the training rows, so that settings are chosen without looking at the test rows."""
        if count == 0:
            return self, None
        if not 0 < count < len(self.labels):
            raise ValueError(f"validation_rows={count}: give 0 (no validation) or fewer rows than the "
                             f"{len(self.labels)} training rows")
        return (ImageClassificationData(self.images[:-count], self.labels[:-count], self.num_classes),
                ImageClassificationData(self.images[-count:], self.labels[-count:], self.num_classes))


def check_labels(labels: torch.Tensor, num_classes: int, first: int, where: str, column: str) -> None:
    """Raises ``ValueError`` naming the first row whose label is outside 0..num_classes - 1."""
    bad = torch.nonzero((labels < 0) | (labels >= num_classes)).flatten().tolist()
    if not bad:
        return
    label = labels[bad[0]].item()
    raise ValueError(
        f"row {first + bad[0]} of {where} has label {label} in column {column!r}, outside the valid "
        f"range 0..{num_classes - 1}"
        + (f"; {len(bad)} rows in all" if len(bad) > 1 else "")
        + ("; -1 (or an empty value) means 'no label' in 🤗 Datasets, as in test splits published without "
           "labels: use a labelled split" if label < 0 else ""))


def decode_images(dataset: datasets.Dataset, column: str, first: int, where: str, resolution: int | None,
                  channels: int | None) -> torch.Tensor:
    """Every image of ``column`` as one uint8 NHWC tensor; rows are named from ``first`` in errors."""
    decoder = datasets.Image(mode=dataset.features[column].mode)
    encoded = dataset.select_columns([column]).cast_column(column, datasets.Image(decode=False))
    images: list[np.ndarray] = []
    for batch in encoded.iter(batch_size=1000):
        for value in batch[column]:
            row = first + len(images)
            image = decode_image(value, column, row, where, decoder)
            if channels is None:
                channels = 1 if image.mode in ("L", "LA", "I", "I;16", "1") else 3
            array = to_array(image, resolution, channels)
            if images and array.shape != images[0].shape:
                raise ValueError(f"row {row} of {where} has size {array.shape[:2]} but row {first} has "
                                 f"{images[0].shape[:2]}: pass --resolution to resize every image to one size")
            images.append(array)
    return torch.from_numpy(np.stack(images))


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
    image's size when all images share it (and must be given otherwise). ``num_classes`` defaults to the
    ClassLabel's classes (or the largest label + 1). Errors name rows by their index in the whole split.
    """
    dataset = load_split(name_or_path, split)
    image_column, label_column = find_columns(dataset, image_column, label_column)
    first = 0
    if rows is not None:
        start, stop = rows
        if not 0 <= start < min(stop, len(dataset)):
            raise ValueError(f"rows {start}:{stop} select nothing from split {split!r} of {name_or_path}, "
                             f"which has {len(dataset)} rows")
        dataset = dataset.select(range(start, min(stop, len(dataset))))
        first = start
    where = f"{name_or_path}:{split}"
    # A missing label (None) becomes -1, 🤗 Datasets' "no label", so that the range check names its row.
    labels = torch.as_tensor([-1 if label is None else label for label in dataset[label_column]], dtype=torch.long)
    if num_classes is None:
        feature = dataset.features[label_column]
        num_classes = feature.num_classes if isinstance(feature, datasets.ClassLabel) else int(labels.max()) + 1
    check_labels(labels, num_classes, first, where, label_column)
    images = decode_images(dataset, image_column, first, where, resolution, channels)
    return ImageClassificationData(images, labels, num_classes)


def load_train_and_test(args: argparse.Namespace) -> tuple[ImageClassificationData, ImageClassificationData]:
    """The chosen rows of the train and test splits (flags of ``add_data_arguments``); test images get the train
    images' size and channels."""
    train = load_classification_data(args.dataset_name, args.train_split, args.image_column_name,
                                     args.label_column_name, args.train_rows, args.resolution)
    test = load_classification_data(args.dataset_name, args.test_split, args.image_column_name,
                                    args.label_column_name, args.test_rows, args.resolution,
                                    channels=train.channels, num_classes=train.num_classes)
    return train, test
