"""Protect every image of a 🤗 dataset split before publishing it, keeping all other columns.

ConfounderGAN noise (Tian et al., "ConfounderGAN: Protecting Image Data Privacy with Causal Confounder",
NeurIPS 2022) is added with a batched ``Dataset.map``. The output is lossless: protected images are new PIL
images without a source ``format``, which 🤗 Datasets stores as PNG (TIFF for exotic modes), never
re-encoded as the JPEG the input may have been, since JPEG would remove much of the noise.

``save_protected_dataset`` spreads the work over the processes of ``accelerate launch`` (one contiguous shard
each, on its own GPU when there are GPUs) and writes one ``save_to_disk`` folder, rows in their input order.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import datasets
import torch
from accelerate import PartialState

from .data import decode_image
from .generator import ConfounderGenerator

SHARDS_FOLDER = "_shards"


def protect_dataset(
    generator: ConfounderGenerator,
    dataset: datasets.Dataset,
    image_column: str,
    label_column: str | None = None,
    use_labels: bool = False,
    labels: int | None = None,
    epsilon: float | None = None,
    batch_size: int = 64,
    cache_file_name: str | None = None,
    first_row: int = 0,
) -> datasets.Dataset:
    """Returns ``dataset`` with every image of ``image_column`` protected on the generator's device.

    Args:
        use_labels: give each image the label in ``label_column`` (a classification dataset's classes).
        labels: one label / owner code for every image; ``None`` with ``use_labels=False`` is label-free.
        epsilon: L∞ bound in [0, 1] units; defaults to the generator's ε.
        batch_size: rows per ``map`` batch and per forward pass.
        cache_file_name: where ``map`` writes its Arrow file (by default 🤗 Datasets' cache, which for a
            ``save_to_disk`` input is the input folder itself).
        first_row: the row number of ``dataset``'s first row in the whole split (a shard's offset), for errors.
    """
    feature = dataset.features.get(image_column)
    if not isinstance(feature, datasets.Image) or not feature.decode:
        raise ValueError(f"column {image_column!r} is {feature!r}, not a decoded datasets.Image column; "
                         f"choose one with --image_column_name; columns are {list(dataset.features)}")
    if use_labels and labels is not None:
        raise ValueError("use_labels gives each image its own label and labels one code for all of them: "
                         "pass only one of them")
    input_columns = [image_column]
    if use_labels:
        if label_column not in dataset.features:
            raise ValueError(f"use_labels needs a label column, got {label_column!r}; columns are "
                             f"{list(dataset.features)} (choose one with --label_column_name)")
        # Check every label before protecting anything, rather than failing in the middle of the map.
        try:
            generator.label_codes(dataset[label_column], len(dataset))
        except ValueError as error:
            raise ValueError(f"label column {label_column!r}: {error}") from None
        input_columns.append(label_column)
    else:
        generator.label_codes(labels, 1)

    def protect_batch(encoded: list[dict], *rest: list) -> dict[str, list]:
        *row_labels, indices = rest
        images = [decode_image(value, image_column, first_row + index, "the dataset")
                  for value, index in zip(encoded, indices)]
        # protect() builds its outputs with Image.fromarray: no format or filename, so they are stored as PNG.
        protected = generator.protect(images, labels=row_labels[0] if use_labels else labels, epsilon=epsilon,
                                      batch_size=batch_size, device=generator.device)
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
    label_column: str | None = None,
    use_labels: bool = False,
    labels: int | None = None,
    epsilon: float | None = None,
    batch_size: int = 64,
    device: str | torch.device | None = None,
) -> datasets.Dataset | None:
    """Protects ``dataset`` and saves it to ``output_dir`` with ``save_to_disk``; call it on every process.

    Each process protects one contiguous shard on ``device`` (by default its Accelerate device) into
    ``output_dir/_shards``; the main process then joins the shards in order, saves them and removes
    ``_shards``. Returns the saved dataset on the main process and ``None`` on the others.
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
            protect_dataset(generator, shard(state.process_index), image_column, label_column, use_labels, labels,
                            epsilon, batch_size, cache_file_name=str(shards_dir / f"{state.process_index}.arrow"),
                            first_row=sum(len(shard(index)) for index in range(state.process_index)))
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
