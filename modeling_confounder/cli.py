"""The ``confounder`` command line: protect image files, folders and 🤗 datasets before you publish them.

    confounder protect photos/ --output protected/
    confounder protect a.jpg b.png --output out/ --epsilon 8 --format tiff --label 3
    confounder protect --dataset_name ../shared/data/cifar10 --split train --output_dir cifar10-protected
    accelerate launch --num_processes 4 -m modeling_confounder.cli protect --dataset_name NAME -o DIR

Exit status: 0 when every image was protected (or skipped with --resume), 1 when any failed or the command could
not start (the message says why), 2 for invalid arguments. Safety guarantees: README, "Protect your photos".
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from . import DEFAULT_MODEL
from .generator import ConfounderGenerator
from .image_files import (
    DEFAULT_MAX_PIXELS,
    LOSSY_FORMATS,
    OUTPUT_FORMATS,
    ImageJob,
    SourceImage,
    UnreadableImage,
    find_images,
    read_image,
    remove_stale_temporary_files,
    save_image,
)

BATCH_PIXELS = 16_000_000
"""Pixels read into memory at once: a batch of large photos stops early instead of holding 64 of them."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="confounder", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    protect = commands.add_parser(
        "protect", help="add protective noise to image files and folders, or to a 🤗 dataset",
        description="Protect images: writes a copy of each with imperceptible noise that makes it unlearnable. "
                    "Folders are searched recursively and mirrored under --output; inputs are never modified. "
                    "With --dataset_name, protects every image of a 🤗 dataset split instead and saves the "
                    "split with save_to_disk; run it with `accelerate launch` to use several processes/GPUs.")
    protect.add_argument("inputs", nargs="*", type=Path, metavar="INPUT",
                         help="image files and folders (or give --dataset_name)")
    protect.add_argument("--output", "--output_dir", "-o", required=True, type=Path, metavar="DIR",
                         help="folder for the protected images or dataset (created if missing)")
    protect.add_argument("--model", default=DEFAULT_MODEL, metavar="PATH_OR_HUB_ID",
                         help="generator folder or Hub id (default: the weights shipped with the package)")
    protect.add_argument("--epsilon", type=float, default=None, metavar="PIXELS",
                         help="noise bound in pixel levels out of 255 (default: the model's, 8)")
    protect.add_argument("--label", type=int, default=None, metavar="CODE",
                         help="one label / owner code for every image (default: label-free protection)")
    protect.add_argument("--batch-size", type=int, default=64, metavar="N", help="images read and protected at once")
    protect.add_argument("--format", choices=sorted(OUTPUT_FORMATS), default="png",
                         help="output format (default png; jpeg is lossy and weakens the protection)")
    existing = protect.add_mutually_exclusive_group()
    existing.add_argument("--resume", action="store_true",
                          help="skip outputs that already exist (finished by an earlier, interrupted run)")
    existing.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    protect.add_argument("--keep-metadata", action="store_true",
                         help="copy EXIF (camera, date, author) to the outputs, never GPS; default: no metadata")
    protect.add_argument("--max-megapixels", type=float, default=DEFAULT_MAX_PIXELS / 1e6, metavar="MP",
                         help="refuse larger images before decoding them (default: %(default)g)")
    protect.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    dataset = protect.add_argument_group("🤗 dataset (with --dataset_name)")
    dataset.add_argument("--dataset_name", default=None, metavar="NAME_OR_PATH",
                         help="Hub id, local dataset folder or save_to_disk folder to protect")
    dataset.add_argument("--split", default="train", help="split to protect (default: train)")
    dataset.add_argument("--image_column_name", default=None, metavar="COLUMN",
                         help="image column (default: the first Image column)")
    dataset.add_argument("--label_column_name", default=None, metavar="COLUMN",
                         help="label column for --use_labels (default: the first ClassLabel column)")
    dataset.add_argument("--use_labels", action="store_true",
                         help="give each image its own label from the label column (default: label-free)")
    dataset.add_argument("--max_samples", type=int, default=None, metavar="N",
                         help="protect only the first N rows")
    dataset.add_argument("--push_to_hub", action="store_true",
                         help="also push the protected split to the Hub")
    dataset.add_argument("--hub_model_id", default=None, metavar="ORG/NAME",
                         help="Hub dataset repository for --push_to_hub")
    return parser


def epsilon_option(args: argparse.Namespace) -> float | None:
    """Checks the options both kinds of input share; returns --epsilon in [0, 1] units."""
    if args.epsilon is not None and not 0 < args.epsilon <= 255:
        raise SystemExit(f"confounder: --epsilon is in pixel levels out of 255 (e.g. 8), got {args.epsilon}")
    if args.batch_size < 1:
        raise SystemExit(f"confounder: --batch-size must be at least 1, got {args.batch_size}")
    return None if args.epsilon is None else args.epsilon / 255


def protect_files(args: argparse.Namespace) -> int:
    epsilon = epsilon_option(args)
    if args.max_megapixels <= 0:
        raise SystemExit(f"confounder: --max-megapixels must be positive, got {args.max_megapixels}")
    max_pixels = int(args.max_megapixels * 1e6)
    # Pillow refuses images over twice its own limit before our check could say why; ours is the one that applies.
    Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, max_pixels)
    if args.format in LOSSY_FORMATS:
        warnings.warn(f"--format {args.format} is lossy: re-encoding removes much of the noise and weakens the "
                      "protection; prefer png, tiff or webp-lossless", stacklevel=1)
    suffix = OUTPUT_FORMATS[args.format][0]
    jobs, errors, notes = find_images(args.inputs, args.output, suffix)
    for line in notes:
        print(f"note: {line}", file=sys.stderr)
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    remove_stale_temporary_files(args.output)
    finished = [job for job in jobs if job.target.exists()]
    if finished and not (args.resume or args.overwrite):
        raise SystemExit(f"confounder: {len(finished)} of the {len(jobs)} outputs already exist in {args.output} "
                         f"(e.g. {finished[0].target}): pass --resume to skip them or --overwrite to replace them")
    failed, skipped, protected = len(errors), 0, 0
    if args.resume:
        skipped, done = len(finished), set(finished)
        jobs = [job for job in jobs if job not in done]

    if jobs:
        try:
            generator = ConfounderGenerator.from_pretrained(args.model)
            generator.label_codes(args.label, 1)
        except (OSError, ValueError) as error:
            raise SystemExit(f"confounder: {error}") from None
        with tqdm(total=len(jobs), unit="img", desc="protecting") as bar:
            batch: list[tuple[ImageJob, SourceImage]] = []
            pixels = 0
            for number, job in enumerate(jobs, 1):
                try:
                    source = read_image(job.source, max_pixels)
                    batch.append((job, source))
                    pixels += source.image.width * source.image.height
                    if source.frames > 1:
                        tqdm.write(f"note: {job.source}: {source.frames} frames; the output is the first frame, "
                                   "protected", file=sys.stderr)
                except UnreadableImage as error:
                    failed += 1
                    tqdm.write(f"error: {job.source}: {error}", file=sys.stderr)
                if batch and (len(batch) == args.batch_size or pixels >= BATCH_PIXELS or number == len(jobs)):
                    done, write_errors = write_protected(generator, batch, args, epsilon)
                    protected += done
                    failed += len(write_errors)
                    for error in write_errors:
                        tqdm.write(f"error: {error}", file=sys.stderr)
                    batch, pixels = [], 0
                bar.update()

    print(f"protected {protected}, skipped {skipped} (finished earlier), failed {failed} -> {args.output}")
    return 1 if failed else 0


def write_protected(generator: ConfounderGenerator, batch: list[tuple[ImageJob, SourceImage]],
                    args: argparse.Namespace, epsilon: float | None) -> tuple[int, list[str]]:
    """Protects one batch of read images and writes them; returns how many were written and the errors."""
    outputs = generator.protect([source.image for _, source in batch], labels=args.label, epsilon=epsilon,
                                device=args.device)
    written, errors = 0, []
    for (job, source), output in zip(batch, outputs):
        try:
            save_image(output, job.target, args.format, source.icc_profile,
                       source.exif if args.keep_metadata else None)
            written += 1
        except OSError as error:
            errors.append(f"{job.target}: cannot write ({error})")
    return written, errors


def protect_dataset_split(args: argparse.Namespace) -> int:
    """``--dataset_name``: protects one split on every process of ``accelerate launch`` (or just this one)."""
    # datasets and accelerate's state are imported here: they slow down starting the command for files.
    from accelerate import PartialState

    from .data import find_columns, load_split
    from .protect_dataset import save_protected_dataset

    epsilon = epsilon_option(args)
    file_options = [name for name, given in [("--format", args.format != "png"), ("--resume", args.resume),
                                             ("--overwrite", args.overwrite), ("--keep-metadata", args.keep_metadata)]
                    if given]
    if file_options:
        raise SystemExit(f"confounder: {', '.join(file_options)} apply to image files, not to --dataset_name "
                         "(a dataset is always saved losslessly as PNG into a new, empty --output_dir)")
    if args.use_labels and args.label is not None:
        raise SystemExit("confounder: --use_labels gives each image its own label and --label one code for "
                         "all: pass only one of them")
    if args.push_to_hub and not args.hub_model_id:
        raise SystemExit("confounder: --push_to_hub needs --hub_model_id ORG/NAME, the dataset repository")
    if args.max_samples is not None and args.max_samples < 1:
        raise SystemExit(f"confounder: --max_samples must be at least 1, got {args.max_samples}")
    if args.output.exists() and (not args.output.is_dir() or any(args.output.iterdir())):
        raise SystemExit(f"confounder: --output_dir {args.output} already exists and is not an empty folder; "
                         "choose a new one or remove it")
    state = PartialState()
    try:
        generator = ConfounderGenerator.from_pretrained(args.model)
        generator.label_codes(args.label, 1)
        # The main process downloads or prepares the dataset first; the others then read it from the cache.
        with state.main_process_first():
            dataset = load_split(args.dataset_name, args.split)
        image_column, label_column = find_columns(dataset, args.image_column_name, args.label_column_name,
                                                  need_label=args.use_labels)
        if args.max_samples is not None:
            dataset = dataset.select(range(min(args.max_samples, len(dataset))))
        saved = save_protected_dataset(generator, dataset, args.output, image_column, label_column,
                                       use_labels=args.use_labels, labels=args.label, epsilon=epsilon,
                                       batch_size=args.batch_size, device=args.device)
    except (OSError, ValueError) as error:
        raise SystemExit(f"confounder: {error}") from None
    if saved is not None:
        if args.push_to_hub:
            saved.push_to_hub(args.hub_model_id)
        print(f"protected {len(saved)} images of {args.dataset_name}:{args.split} -> {args.output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if bool(args.inputs) == (args.dataset_name is not None):
        parser.error("protect takes image files and folders (INPUT...) or --dataset_name NAME_OR_PATH: "
                     "give exactly one of them")
    return protect_dataset_split(args) if args.dataset_name else protect_files(args)


if __name__ == "__main__":
    sys.exit(main())
