"""The ``confounder`` command line: protect image files and folders before you publish them.

    confounder protect photos/ --output protected/
    confounder protect a.jpg b.png --output out/ --epsilon 8 --format tiff --label 3

Exit status: 0 when every image was protected or skipped, 1 when any failed, 2 for usage errors.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from tqdm.auto import tqdm

from . import DEFAULT_MODEL
from .generator import ConfounderGenerator
from .image_files import LOSSY_FORMATS, OUTPUT_FORMATS, find_images, load_image, save_image


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="confounder", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    protect = commands.add_parser(
        "protect", help="add protective noise to image files and folders",
        description="Protect images: writes a copy of each with imperceptible noise that makes it unlearnable. "
                    "Folders are searched recursively and mirrored under --output; inputs are never modified.")
    protect.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="image files and folders")
    protect.add_argument("--output", "-o", required=True, type=Path, metavar="DIR",
                         help="folder for the protected images (created if missing)")
    protect.add_argument("--model", default=DEFAULT_MODEL, metavar="PATH_OR_HUB_ID",
                         help="generator folder or Hub id (default: the weights shipped with the package)")
    protect.add_argument("--epsilon", type=float, default=None, metavar="PIXELS",
                         help="noise bound in pixel levels out of 255 (default: the model's, 8)")
    protect.add_argument("--label", type=int, default=None, metavar="CODE",
                         help="one label / owner code for every image (default: label-free protection)")
    protect.add_argument("--batch-size", type=int, default=64, metavar="N", help="images read and protected at once")
    protect.add_argument("--format", choices=sorted(OUTPUT_FORMATS), default="png",
                         help="output format (default png; jpeg is lossy and weakens the protection)")
    protect.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    protect.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    return parser


def protect_files(args: argparse.Namespace) -> int:
    if args.epsilon is not None and not 0 < args.epsilon <= 255:
        raise SystemExit(f"confounder: --epsilon is in pixel levels out of 255 (e.g. 8), got {args.epsilon}")
    if args.batch_size < 1:
        raise SystemExit(f"confounder: --batch-size must be at least 1, got {args.batch_size}")
    if args.format in LOSSY_FORMATS:
        warnings.warn(f"--format {args.format} is lossy: re-encoding removes much of the noise and weakens the "
                      "protection; prefer png, tiff or webp-lossless", stacklevel=1)
    suffix = OUTPUT_FORMATS[args.format][0]
    jobs, errors = find_images(args.inputs, args.output, suffix)
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    failed, skipped, protected = len(errors), 0, 0
    if not args.overwrite:
        skipped = sum(job.target.exists() for job in jobs)
        jobs = [job for job in jobs if not job.target.exists()]

    if jobs:
        try:
            generator = ConfounderGenerator.from_pretrained(args.model)
            generator.label_codes(args.label, 1)
        except (OSError, ValueError) as error:
            raise SystemExit(f"confounder: {error}") from None
        epsilon = None if args.epsilon is None else args.epsilon / 255
        with tqdm(total=len(jobs), unit="img", desc="protecting") as bar:
            for start in range(0, len(jobs), args.batch_size):
                batch, images = [], []
                for job in jobs[start:start + args.batch_size]:
                    try:
                        images.append(load_image(job.source))
                        batch.append(job)
                    except Exception as error:  # noqa: BLE001 - one unreadable file must not stop the batch
                        failed += 1
                        tqdm.write(f"error: {job.source}: cannot read image ({error})", file=sys.stderr)
                if images:
                    outputs = generator.protect(images, labels=args.label, epsilon=epsilon, device=args.device)
                    for job, image, output in zip(batch, images, outputs):
                        try:
                            save_image(output, job.target, args.format, image.info.get("icc_profile"))
                            protected += 1
                        except OSError as error:
                            failed += 1
                            tqdm.write(f"error: {job.target}: cannot write ({error})", file=sys.stderr)
                bar.update(len(jobs[start:start + args.batch_size]))

    print(f"protected {protected}, skipped {skipped} (already exist; --overwrite to replace), failed {failed}"
          f" -> {args.output}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return protect_files(args)


if __name__ == "__main__":
    sys.exit(main())
