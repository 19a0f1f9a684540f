"""The ``confounder`` command line: protect image files, folders and 🤗 datasets before you publish them.

    confounder protect photos/ --output protected/
    confounder protect a.jpg b.png --output out/ --epsilon 8 --format tiff --key-file ~/keys/portfolio
    confounder protect --dataset ../shared/data/cifar10 --split train --output cifar10-protected
    confounder protect --dataset uoft-cs/cifar10 --rows 0:1000 --use-labels -o out --push-to-hub --hub-repo ORG/NAME
    accelerate launch --num_processes 4 -m modeling_confounder.cli protect --dataset NAME -o DIR

The dataset path needs the ``datasets`` extra (``pip install "confounder-gan[datasets]"``).

Keys: the default generator is keyed. The first run makes your key (a random secret, readable by you only) in
``$XDG_CONFIG_HOME/confounder/key`` (``~/.config/confounder/key``) and says so; later runs reuse it, so all your
photos carry the same protection. The key is never written into outputs, logs or messages.

Exit status: 0 when every image was protected (or skipped with --resume), 1 when any failed or the command could
not start (the message says why), 2 for invalid arguments. Safety guarantees: README, "Protect your photos".
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from . import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MODEL,
    LOSSY_FORMATS,
    OUTPUT_FORMATS,
    ConfounderGenerator,
    ImageJob,
    SourceImage,
    UnreadableImage,
    default_key_file,
    find_images,
    is_keyed,
    load_or_create_key,
    protect,
    read_image,
    remove_stale_temporary_files,
    save_image,
)

MODEL = DEFAULT_MODEL
"""The generator ``--model`` defaults to: the keyed one shipped with the package."""
BATCH_PIXELS = 16_000_000
"""Pixels read into memory at once: a batch of large photos stops early instead of holding 64 of them."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="confounder", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser(
        "protect", help="add protective noise to image files and folders, or to a 🤗 dataset",
        description="Protect images: writes a copy of each with imperceptible noise that makes it unlearnable. "
                    "Folders are searched recursively and mirrored under --output; inputs are never modified. "
                    "With --dataset, protects every image of a 🤗 dataset split instead and saves the "
                    "split with save_to_disk; run it with `accelerate launch` to use several processes/GPUs.")
    command.add_argument("inputs", nargs="*", type=Path, metavar="INPUT",
                         help="image files and folders (or give --dataset)")
    command.add_argument("--output", "-o", required=True, type=Path, metavar="DIR",
                         help="folder for the protected images or dataset (created if missing)")
    command.add_argument("--model", default=MODEL, metavar="PATH_OR_HUB_ID",
                         help="generator folder or Hub id (default: the keyed weights shipped with the package)")
    command.add_argument("--key-file", type=Path, default=None, metavar="PATH",
                         help="your key for a keyed generator: a file holding it, created with a new random key "
                              "if missing (default: your config folder's confounder/key, created on first use)")
    command.add_argument("--epsilon", type=float, default=None, metavar="PIXELS",
                         help="noise bound in pixel levels out of 255 (default: the model's, 8)")
    command.add_argument("--label", type=int, default=None, metavar="CLASS",
                         help="one class for every image: with a keyed generator, that class's own key derived "
                              "from yours; with a label generator, its owner code (default: your key alone, or "
                              "label-free)")
    command.add_argument("--batch-size", type=int, default=64, metavar="N", help="images read and protected at once")
    command.add_argument("--format", choices=sorted(OUTPUT_FORMATS), default="png",
                         help="output format (default png; jpeg is lossy and weakens the protection)")
    existing = command.add_mutually_exclusive_group()
    existing.add_argument("--resume", action="store_true",
                          help="skip outputs that already exist (finished by an earlier, interrupted run)")
    existing.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    command.add_argument("--keep-metadata", action="store_true",
                         help="copy EXIF (camera, date, author) to the outputs, never GPS; default: no metadata")
    command.add_argument("--max-megapixels", type=float, default=DEFAULT_MAX_PIXELS / 1e6, metavar="MP",
                         help="refuse larger images before decoding them (default: %(default)g)")
    command.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    dataset = command.add_argument_group("🤗 dataset (with --dataset; needs the datasets extra)")
    dataset.add_argument("--dataset", default=None, metavar="NAME_OR_PATH",
                         help="Hub id, local dataset folder or save_to_disk folder to protect")
    dataset.add_argument("--split", default="train", help="split to protect (default: train)")
    dataset.add_argument("--image-column", default=None, metavar="COLUMN",
                         help="image column (default: the first Image column)")
    dataset.add_argument("--label-column", default=None, metavar="COLUMN",
                         help="label column for --use-labels (default: the first ClassLabel column)")
    dataset.add_argument("--use-labels", action="store_true",
                         help="give each image its own label from the label column: with a keyed generator, "
                              "each class its own key derived from yours (default: one key, or label-free)")
    dataset.add_argument("--rows", type=row_range, default=None, metavar="START:STOP",
                         help="protect only rows START to STOP-1 of the split (default: all of them)")
    dataset.add_argument("--push-to-hub", action="store_true",
                         help="also push the protected split to the Hub")
    dataset.add_argument("--hub-repo", default=None, metavar="ORG/NAME",
                         help="Hub dataset repository for --push-to-hub")
    return parser


def row_range(text: str) -> tuple[int, int]:
    """``--rows START:STOP`` as (start, stop), 0 <= start < stop."""
    start, colon, stop = text.partition(":")
    if not (colon and start.isdigit() and stop.isdigit() and int(start) < int(stop)):
        raise argparse.ArgumentTypeError(f"expected START:STOP with 0 <= START < STOP (e.g. 0:1000), got {text!r}")
    return int(start), int(stop)


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
        protected, job_failures = protect_jobs(jobs, args, epsilon, max_pixels)
        failed += job_failures
    print(f"protected {protected}, skipped {skipped} (finished earlier), failed {failed} -> {args.output}")
    return 1 if failed else 0


def load_generator(args: argparse.Namespace) -> tuple[ConfounderGenerator, str | None]:
    """The ``--model`` generator and, for a keyed one, the user's key; exits with the reason when either is wrong."""
    try:
        generator = ConfounderGenerator.from_pretrained(args.model)
    except (OSError, ValueError) as error:
        raise SystemExit(f"confounder: {error}") from None
    if is_keyed(generator):
        if args.label is not None and args.label < 0:
            raise SystemExit(f"confounder: --label is a class index >= 0 (its key is derived from yours), "
                             f"got {args.label}")
        return generator, load_key(args.key_file)
    if args.key_file is not None:
        raise SystemExit(f"confounder: the model {args.model} takes labels (--label, --use-labels), not keys: "
                         "drop --key-file, or use a keyed model (the default)")
    try:
        generator.label_codes(args.label, 1)
    except ValueError as error:
        raise SystemExit(f"confounder: {error}") from None
    return generator, None


def load_key(key_file: Path | None) -> str:
    """The key in ``key_file`` (default: the user's), made on first use; a new key is announced, never shown."""
    path = default_key_file() if key_file is None else key_file.expanduser()
    try:
        try:
            key, created = load_or_create_key(path)
        except FileExistsError:  # another process made it a moment ago: read theirs
            key, created = load_or_create_key(path)
    except (OSError, ValueError) as error:
        if not path.exists():
            raise SystemExit(f"confounder: cannot create the key file {path} ({getattr(error, 'strerror', error)}): "
                             "choose another place with --key-file PATH") from None
        # Neither the key nor a decoding error (which quotes the file's bytes) may reach the message.
        reason = (error.strerror or "unreadable" if isinstance(error, OSError) else
                  "not a text file" if isinstance(error, UnicodeDecodeError) else "it is empty")
        raise SystemExit(f"confounder: cannot use the key file {path} ({reason}): delete it to make a new key, "
                         "or restore your key") from None
    if created:
        print(f"note: created your protection key in {path}; keep it safe and secret (a copy in a password "
              "manager): it ties your protected photos together, so use the same key for all your photos",
              file=sys.stderr)
    elif os.name == "posix" and path.stat().st_mode & 0o077:
        print(f"warning: your key file {path} can be read by other users; make it private with chmod 600 {path}",
              file=sys.stderr)
    return key


def protect_jobs(jobs: list[ImageJob], args: argparse.Namespace, epsilon: float | None,
                 max_pixels: int) -> tuple[int, int]:
    """Reads, protects and writes the images of ``jobs`` in batches; returns how many were written and failed."""
    generator, key = load_generator(args)
    protected = failed = pixels = 0
    batch: list[tuple[ImageJob, SourceImage]] = []
    with tqdm(total=len(jobs), unit="img", desc="protecting") as bar:
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
                done, write_errors = write_protected(generator, key, batch, args, epsilon)
                protected += done
                failed += len(write_errors)
                for error in write_errors:
                    tqdm.write(f"error: {error}", file=sys.stderr)
                batch, pixels = [], 0
            bar.update()
    return protected, failed


def write_protected(generator: ConfounderGenerator, key: str | None, batch: list[tuple[ImageJob, SourceImage]],
                    args: argparse.Namespace, epsilon: float | None) -> tuple[int, list[str]]:
    """Protects one batch of read images and writes them; returns how many were written and the errors."""
    outputs = protect(generator, [source.image for _, source in batch], labels=args.label, key=key,
                      epsilon=epsilon, device=args.device)
    written, errors = 0, []
    for (job, source), output in zip(batch, outputs):
        try:
            save_image(output, job.target, args.format, source.icc_profile,
                       source.exif if args.keep_metadata else None)
            written += 1
        except OSError as error:
            errors.append(f"{job.target}: cannot write ({error})")
    return written, errors


def check_dataset_options(args: argparse.Namespace) -> None:
    """Refuses options that do not apply to a dataset, or contradict each other, before anything is loaded."""
    file_options = [name for name, given in [("--format", args.format != "png"), ("--resume", args.resume),
                                             ("--overwrite", args.overwrite), ("--keep-metadata", args.keep_metadata)]
                    if given]
    if file_options:
        raise SystemExit(f"confounder: {', '.join(file_options)} apply to image files, not to --dataset "
                         "(a dataset is always saved losslessly as PNG into a new, empty --output folder)")
    if args.use_labels and args.label is not None:
        raise SystemExit("confounder: --use-labels gives each image its own label and --label one code for "
                         "all: pass only one of them")
    if args.push_to_hub and not args.hub_repo:
        raise SystemExit("confounder: --push-to-hub needs --hub-repo ORG/NAME, the dataset repository")
    if args.output.exists() and (not args.output.is_dir() or any(args.output.iterdir())):
        raise SystemExit(f"confounder: --output {args.output} already exists and is not an empty folder; "
                         "choose a new one or remove it")


def protect_dataset_split(args: argparse.Namespace) -> int:
    """``--dataset``: protects one split on every process of ``accelerate launch`` (or just this one)."""
    epsilon = epsilon_option(args)
    check_dataset_options(args)
    try:
        # The datasets extra, imported here: the command for files needs none of it.
        from accelerate import PartialState

        from .hub_datasets import find_columns, load_split, save_protected_dataset
    except ImportError as error:
        raise SystemExit(f"confounder: --dataset needs the datasets extra ({error}); install it with "
                         'pip install "confounder-gan[datasets]"') from None
    state = PartialState()
    # The main process makes the key on a first run; the others then read it.
    with state.main_process_first():
        generator, key = load_generator(args)
    # Only a keyed generator takes a key: one key for the split, or with --use-labels one per class derived from it.
    keyed = {} if key is None else {"key": key}
    try:
        # The main process downloads or prepares the dataset first; the others then read it from the cache.
        with state.main_process_first():
            dataset = load_split(args.dataset, args.split)
        image_column, label_column = find_columns(dataset, args.image_column, args.label_column,
                                                  need_label=args.use_labels,
                                                  flags=("--image-column", "--label-column"))
        if args.rows is not None:
            start, stop = args.rows
            if start >= len(dataset):
                raise ValueError(f"--rows {start}:{stop} selects nothing from split {args.split!r} of "
                                 f"{args.dataset}, which has {len(dataset)} rows")
            dataset = dataset.select(range(start, min(stop, len(dataset))))
        saved = save_protected_dataset(generator, dataset, args.output, image_column, device=args.device,
                                       label_column=label_column, use_labels=args.use_labels, labels=args.label,
                                       epsilon=epsilon, batch_size=args.batch_size, **keyed)
    except (OSError, ValueError) as error:
        raise SystemExit(f"confounder: {error}") from None
    if saved is not None:
        if args.push_to_hub:
            saved.push_to_hub(args.hub_repo)
        print(f"protected {len(saved)} images of {args.dataset}:{args.split} -> {args.output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if bool(args.inputs) == (args.dataset is not None):
        parser.error("protect takes image files and folders (INPUT...) or --dataset NAME_OR_PATH: "
                     "give exactly one of them")
    return protect_dataset_split(args) if args.dataset else protect_files(args)


if __name__ == "__main__":
    sys.exit(main())
