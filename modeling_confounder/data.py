"""🤗 Datasets helpers shared by training, evaluation and dataset protection.

Image-classification datasets come from the Hub (``"uoft-cs/cifar10"``), from a local folder that
``datasets.load_dataset`` reads (``"../shared/data/cifar10"``), or from a ``save_to_disk`` folder. Images become
uint8 NHWC tensors; labels a LongTensor. Columns are found by their feature type when not named.

Bad input fails while loading, before any training starts, with a ``ValueError`` that names what to fix: an
empty split, a missing column (with the columns that exist and the option to pass), a label outside the classes
or an image that does not decode (with its split, row and column).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .protect import pil_to_array


def load_split(name_or_path: str, split: str) -> datasets.Dataset:
    """One split of a Hub dataset, a local dataset folder, or a ``save_to_disk`` folder; never an empty one."""
    empty = f"split {split!r} of {name_or_path} is empty"
    path = Path(name_or_path)
    if (path / "dataset_dict.json").is_file():
        # Only the wanted split is read: 🤗 Datasets cannot read back a split saved with 0 rows, and one such split
        # must not break loading the others.
        splits = json.loads((path / "dataset_dict.json").read_text())["splits"]
        if split not in splits:
            raise ValueError(f"{name_or_path} has no split {split!r}; it has {sorted(splits)}")
        path = path / split
    if (path / "state.json").is_file():
        try:
            loaded = datasets.load_from_disk(str(path))
        except IndexError:  # a split saved with 0 rows has no Arrow file, and load_from_disk fails on it
            raise ValueError(empty) from None
    else:
        try:
            loaded = datasets.load_dataset(name_or_path, split=split)
        except ValueError as error:
            if "corresponds to no data" in str(error):  # how load_dataset says that the split has 0 rows
                raise ValueError(empty) from None
            raise
    if len(loaded) == 0:
        raise ValueError(empty)
    return loaded


def column_kind(feature: object) -> str:
    """A feature in words for error messages: "string" for a Value, else its type ("ClassLabel", "Image")."""
    return feature.dtype if isinstance(feature, datasets.Value) else type(feature).__name__


def find_columns(dataset: datasets.Dataset, image_column: str | None, label_column: str | None,
                 need_label: bool = True) -> tuple[str, str | None]:
    """The image and label column names: the given ones (checked), else the first Image / ClassLabel feature.

    The label column is only looked for, and checked, when ``need_label``; its values must be class indices
    (a ClassLabel or an integer column).
    """
    features = dataset.features
    columns = f"columns are {list(features)}"
    if image_column is None:
        image_column = next((name for name, feature in features.items() if isinstance(feature, datasets.Image)),
                            None)
        if image_column is None:
            raise ValueError(f"found no image column (a datasets.Image feature); {columns} "
                             "(choose one with --image_column_name)")
    if image_column not in features:
        raise ValueError(f"no image column {image_column!r}; {columns} (choose one with --image_column_name)")
    if not isinstance(features[image_column], datasets.Image):
        raise ValueError(f"column {image_column!r} holds {column_kind(features[image_column])} values, not images "
                         f"(a datasets.Image feature); {columns} (choose one with --image_column_name)")
    if label_column is None:
        label_column = next((name for name, feature in features.items()
                             if isinstance(feature, datasets.ClassLabel)),
                            next((name for name in ("label", "labels") if name in features), None))
    if not need_label:
        return image_column, label_column
    if label_column is None:
        raise ValueError(f"found no label column (a datasets.ClassLabel feature, or one named 'label' or 'labels'); "
                         f"{columns} (choose one with --label_column_name)")
    if label_column not in features:
        raise ValueError(f"no label column {label_column!r}; {columns} (choose one with --label_column_name)")
    feature = features[label_column]
    if not (isinstance(feature, datasets.ClassLabel)
            or isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint"))):
        raise ValueError(f"column {label_column!r} holds {column_kind(feature)} values, not class indices "
                         f"(a ClassLabel or integer column); {columns} (choose one with --label_column_name)")
    return image_column, label_column


def decode_image(value: dict | None, column: str, row: int, where: str,
                 decoder: datasets.Image | None = None) -> Image.Image:
    """One encoded cell of an Image column (``decode=False``), fully decoded; raises ``ValueError`` naming its row.

    🤗 Datasets decodes a whole batch at once and fails with PIL's bare "cannot identify image file"; decoding
    cell by cell (just as fast) names the row of a broken image.
    """
    if value is None or value["bytes"] is None and value["path"] is None:
        raise ValueError(f"row {row} of {where} has no image in column {column!r}")
    try:
        image = (decoder or datasets.Image()).decode_example(value)
        image.load()
        return image
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, ... for broken files
        reason = ("not an image, or in a format Pillow cannot read"
                  if isinstance(error, UnidentifiedImageError) else f"{type(error).__name__}: {error}")
        source = f" ({value['path']})" if value["path"] else ""
        raise ValueError(f"row {row} of {where}: the image in column {column!r}{source} cannot be decoded: "
                         f"{reason}") from error


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

    # A missing label (None) becomes -1, 🤗 Datasets' "no label", so that the range check below names its row.
    labels = torch.as_tensor([-1 if label is None else label for label in dataset[label_column]], dtype=torch.long)
    if num_classes is None:
        feature = dataset.features[label_column]
        num_classes = feature.num_classes if isinstance(feature, datasets.ClassLabel) else int(labels.max()) + 1
    bad = torch.nonzero((labels < 0) | (labels >= num_classes)).flatten().tolist()
    if bad:
        label = labels[bad[0]].item()
        raise ValueError(
            f"row {first + bad[0]} of {where} has label {label} in column {label_column!r}, outside the valid "
            f"range 0..{num_classes - 1}"
            + (f"; {len(bad)} rows in all" if len(bad) > 1 else "")
            + ("; -1 (or an empty value) means 'no label' in 🤗 Datasets, as in test splits published without "
               "labels: use a labelled split" if label < 0 else ""))

    decoder = datasets.Image(mode=dataset.features[image_column].mode)
    encoded = dataset.select_columns([image_column]).cast_column(image_column, datasets.Image(decode=False))
    images: list[np.ndarray] = []
    for batch in encoded.iter(batch_size=1000):
        for value in batch[image_column]:
            row = first + len(images)
            image = decode_image(value, image_column, row, where, decoder)
            if channels is None:
                channels = 1 if image.mode in ("L", "LA", "I", "I;16", "1") else 3
            array = to_array(image, resolution, channels)
            if images and array.shape != images[0].shape:
                raise ValueError(f"row {row} of {where} has size {array.shape[:2]} but row {first} has "
                                 f"{images[0].shape[:2]}: pass --resolution to resize every image to one size")
            images.append(array)
    return ImageClassificationData(torch.from_numpy(np.stack(images)), labels, num_classes)
