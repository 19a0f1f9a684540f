"""🤗 Datasets support (the ``datasets`` extra): load a split, find its columns, protect every image of it.

Splits come from the Hub (``"uoft-cs/cifar10"``), from a local folder that ``datasets.load_dataset`` reads
(``"../shared/data/cifar10"``), or from a ``save_to_disk`` folder. Columns are found by their feature type when not
named. Bad input fails with a ``ValueError`` that names what to fix: an empty split, a missing column (with the
columns that exist and the option to pass), or an image that does not decode (with its row and column).

Protected splits keep all other columns and are lossless: protected images are new PIL images without a source
``format``, which 🤗 Datasets stores as PNG (TIFF for exotic modes), never re-encoded as the JPEG the input may have
been, since JPEG would remove much of the noise. ``save_protected_dataset`` spreads the work over the processes of
``accelerate launch`` (one contiguous shard each, on its own GPU when there are GPUs) and writes one
``save_to_disk`` folder, rows in their input order.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import datasets
import torch
from accelerate import PartialState
from PIL import Image, UnidentifiedImageError

from .generator import ConfounderGenerator
from .keys import Key
from .pipeline import conditioning, protect

SHARDS_FOLDER = "_shards"
TRAINING_FLAGS = ("--image_column_name", "--label_column_name")
"""The options that choose the image and label columns, as errors name them (the training scripts' by default)."""


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
                 need_label: bool = True, flags: tuple[str, str] = TRAINING_FLAGS) -> tuple[str, str | None]:
    """The image and label column names: the given ones (checked), else the first Image / ClassLabel feature.

    The label column is only looked for, and checked, when ``need_label``; its values must be class indices
    (a ClassLabel or an integer column). Errors tell to choose a column with the options named in ``flags``.
    """
    features = dataset.features
    columns = f"columns are {list(features)}"
    choose_image, choose_label = (f"(choose one with {flag})" for flag in flags)
    if image_column is None:
        image_column = next((name for name, feature in features.items() if isinstance(feature, datasets.Image)),
                            None)
        if image_column is None:
            raise ValueError(f"found no image column (a datasets.Image feature); {columns} {choose_image}")
    if image_column not in features:
        raise ValueError(f"no image column {image_column!r}; {columns} {choose_image}")
    if not isinstance(features[image_column], datasets.Image):
        raise ValueError(  # noqa: TRY004 - a column of the wrong kind is a wrong argument value, as the others
            f"column {image_column!r} holds {column_kind(features[image_column])} values, not images "
            f"(a datasets.Image feature); {columns} {choose_image}")
    if label_column is None:
        label_column = next((name for name, feature in features.items()
                             if isinstance(feature, datasets.ClassLabel)),
                            next((name for name in ("label", "labels") if name in features), None))
    if not need_label:
        return image_column, label_column
    if label_column is None:
        raise ValueError(f"found no label column (a datasets.ClassLabel feature, or one named 'label' or 'labels'); "
                         f"{columns} {choose_label}")
    if label_column not in features:
        raise ValueError(f"no label column {label_column!r}; {columns} {choose_label}")
    feature = features[label_column]
    if not (isinstance(feature, datasets.ClassLabel)
            or isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint"))):
        raise ValueError(f"column {label_column!r} holds {column_kind(feature)} values, not class indices "
                         f"(a ClassLabel or integer column); {columns} {choose_label}")
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


def protect_dataset(
    generator: ConfounderGenerator,
    dataset: datasets.Dataset,
    image_column: str,
    label_column: str | None = None,
    use_labels: bool = False,
    labels: int | None = None,
    key: Key | None = None,
    epsilon: float | None = None,
    batch_size: int = 64,
    cache_file_name: str | None = None,
    first_row: int = 0,
) -> datasets.Dataset:
    """Returns ``dataset`` with every image of ``image_column`` protected on the generator's device.

    Args:
        use_labels: give each image the label in ``label_column`` (a classification dataset's classes).
        labels: one label / owner code for every image; ``None`` with ``use_labels=False`` is label-free.
        key: the owner's secret, for a keyed generator (``pipeline.protect``): with ``use_labels`` each class gets
            its own key derived from it.
        epsilon: L∞ bound in [0, 1] units; defaults to the generator's ε.
        batch_size: rows per ``map`` batch and per forward pass.
        cache_file_name: where ``map`` writes its Arrow file (by default 🤗 Datasets' cache, which for a
            ``save_to_disk`` input is the input folder itself).
        first_row: the row number of ``dataset``'s first row in the whole split (a shard's offset), for errors.
    """
    feature = dataset.features.get(image_column)
    if not isinstance(feature, datasets.Image) or not feature.decode:
        raise ValueError(f"column {image_column!r} is {feature!r}, not a decoded datasets.Image column; "
                         f"pass another image_column; columns are {list(dataset.features)}")
    if use_labels and labels is not None:
        raise ValueError("use_labels gives each image its own label and labels one code for all of them: "
                         "pass only one of them")
    input_columns = [image_column]
    if use_labels:
        if label_column not in dataset.features:
            raise ValueError(f"use_labels needs a label column, got {label_column!r}; columns are "
                             f"{list(dataset.features)}")
        # Check every label before protecting anything, rather than failing in the middle of the map.
        try:
            conditioning(generator, dataset[label_column], key, len(dataset))
        except ValueError as error:
            raise ValueError(f"label column {label_column!r}: {error}") from None
        input_columns.append(label_column)
    else:
        conditioning(generator, labels, key, 1)

    def protect_batch(encoded: list[dict], *rest: list) -> dict[str, list]:
        *row_labels, indices = rest
        images = [decode_image(value, image_column, first_row + index, "the dataset")
                  for value, index in zip(encoded, indices)]
        # protect() builds its outputs with Image.fromarray: no format or filename, so they are stored as PNG.
        protected = protect(generator, images, labels=row_labels[0] if use_labels else labels, key=key,
                            epsilon=epsilon, batch_size=batch_size, device=generator.device)
        return {image_column: protected}

    undecoded = dataset.cast_column(image_column, datasets.Image(decode=False))
    return undecoded.map(protect_batch, batched=True, batch_size=batch_size, input_columns=input_columns,
                         with_indices=True, features=dataset.features, cache_file_name=cache_file_name,
                         load_from_cache_file=False, desc="protecting")


def save_protected_dataset(
    generator: ConfounderGenerator,
    dataset: datasets.Dataset,
    output_dir: str | Path,
    image_column: str,
    device: str | torch.device | None = None,
    **options: Any,
) -> datasets.Dataset | None:
    """Protects ``dataset`` and saves it to ``output_dir`` with ``save_to_disk``; call it on every process.

    Each process protects one contiguous shard on ``device`` (by default its Accelerate device) into
    ``output_dir/_shards``; the main process then joins the shards in order, saves them and removes
    ``_shards``. Returns the saved dataset on the main process and ``None`` on the others. ``options`` are
    ``protect_dataset``'s: ``label_column``, ``use_labels``, ``labels``, ``epsilon``, ``batch_size``.
    """
    state = PartialState()
    output_dir = Path(output_dir)
    shards_dir = output_dir / SHARDS_FOLDER
    generator.to(device or state.device)

    def shard(index: int) -> datasets.Dataset:
        return dataset.shard(num_shards=state.num_processes, index=index, contiguous=True)

    # With more processes than rows some shards are empty, and map writes no file for those.
    filled = [index for index in range(state.num_processes) if len(shard(index))]
    if state.process_index in filled:
        try:
            protect_dataset(generator, shard(state.process_index), image_column,
                            cache_file_name=str(shards_dir / f"{state.process_index}.arrow"),
                            first_row=sum(len(shard(index)) for index in range(state.process_index)), **options)
        except BaseException:
            # A failed run leaves nothing behind, so the same command can run again once the data is fixed.
            shutil.rmtree(shards_dir, ignore_errors=True)
            raise
    state.wait_for_everyone()
    saved = None
    if state.is_main_process:
        joined = datasets.concatenate_datasets(
            [datasets.Dataset.from_file(str(shards_dir / f"{index}.arrow")) for index in filled])
        joined.save_to_disk(str(output_dir))
        shutil.rmtree(shards_dir)
        saved = datasets.load_from_disk(str(output_dir))
    # Nobody returns (and a launcher may end the run) before the main process has finished writing.
    state.wait_for_everyone()
    return saved
