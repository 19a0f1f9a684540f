"""Train a ConfounderGAN generator (Tian et al., NeurIPS 2022, arXiv 2212.01767) with 🤗 Accelerate on a 🤗
image-classification dataset. The objective is ``training/losses.py``, the training ``training/gan.py``.

The default weights shipped in the package (CIFAR-10 rows 0-24,999, 2 CPU cores):

    accelerate launch --cpu --num_processes 1 -m training.train --dataset_name ../shared/data/cifar10 \
        --train_rows 0:25000 --output_dir runs/cifar10-default

Many GPUs (the same script; Accelerate shards the data):

    accelerate launch --multi_gpu --num_processes 8 --mixed_precision bf16 -m training.train \
        --dataset_name uoft-cs/cifar10 --output_dir runs/cifar10 --train_batch_size 256

Fine-tune a generator on another dataset (grayscale works; the classes must match the generator's):

    accelerate launch -m training.train --dataset_name ../shared/data/pneumoniamnist \
        --model runs/cifar10-default --output_dir runs/pneumonia --num_train_epochs 5

Add a label predictor (for the label-free path) to a trained generator without retraining the noise:

    accelerate launch -m training.train --dataset_name ../shared/data/cifar10 --train_rows 0:25000 \
        --model runs/cifar10-default --label_predictor 16 120 --max_train_steps 0 \
        --output_dir runs/cifar10-predictor120

Noise that survives a scraper's grayscale and JPEG (quality 10-50), made against two surrogates:

    accelerate launch -m training.train --dataset_name ../shared/data/cifar10 --train_rows 0:25000 \
        --scraper_transforms grayscale jpeg:10-50 --surrogate_model test_resnet resnet18:strided \
        --output_dir runs/cifar10-scraper

The keyed generator shipped as ``DEFAULT_MODEL`` (owner keys: a fresh random key per class of every batch),
8,000 steps, then 3,000 more through a photo scraper's colour jitter and random resized crops:

    accelerate launch --cpu --num_processes 1 --mixed_precision bf16 -m training.train \
        --dataset_name ../shared/data/cifar10 --train_rows 0:25000 --generator_config key_dim=256 \
        --surrogate_model test_resnet:strided --label_dropout 0 --num_train_epochs 50 --max_train_steps 8000 \
        --checkpointing_steps 1000 --output_dir runs/keyed
    accelerate launch --cpu --num_processes 1 --mixed_precision bf16 -m training.train \
        --dataset_name ../shared/data/cifar10 --train_rows 0:25000 --generator_config key_dim=256 \
        --surrogate_model test_resnet:strided --label_dropout 0 \
        --scraper_transforms color-jitter resized-crop resized-crop+color-jitter --num_train_epochs 60 \
        --max_train_steps 11000 --checkpointing_steps 1000 --resume_from_checkpoint runs/keyed/checkpoint-8000 \
        --output_dir runs/keyed-scraper

Resume: ``--resume_from_checkpoint latest`` (or a ``checkpoint-STEP`` folder) continues where a run stopped.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from .augmentation import SCRAPER_TRANSFORMS, check_transforms
from .data import add_data_arguments
from .gan import GeneratorTrainingConfig, train_generator
from .losses import LossWeights

GENERATOR_KEYS = {"width": "generator_width", "blocks": "generator_blocks", "upsampling": "generator_upsampling",
                  "key_dim": "key_dim"}


def key_value(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` of ``--generator_config``."""
    key, equals, value = text.partition("=")
    if not equals or key not in GENERATOR_KEYS:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE with KEY one of {', '.join(GENERATOR_KEYS)}, "
                                         f"got {text!r}")
    return GENERATOR_KEYS[key], value


def scraper_transform(text: str) -> tuple[str, tuple[float, float] | None]:
    """A transform of ``--scraper_transforms`` (``grayscale``, ``jpeg``, ``jpeg:LOW-HIGH``, ``color-jitter``,
    ``resized-crop``) or a chain of them joined by ``+``. ``jpeg:LOW-HIGH`` sets the quality range of every JPEG,
    chained ones included."""
    name, _, qualities = text.partition(":")
    try:
        check_transforms([name])
        low, high = (float(part) for part in qualities.split("-")) if qualities else (None, None)
        valid = not qualities or name == "jpeg"
    except ValueError:
        valid = False
    if not valid:
        expected = f"one of {', '.join(SCRAPER_TRANSFORMS)} or jpeg:LOW-HIGH, or a chain of them joined by +"
        raise argparse.ArgumentTypeError(f"expected {expected} (resized-crop+color-jitter), got {text!r}")
    return name, None if low is None else (low, high)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The model, loss and training flags (the data flags come from ``training.data``)."""
    model = parser.add_argument_group("model")
    model.add_argument("--model", default=None,
                       help="fine-tune this generator (folder or Hub id) instead of starting from scratch")
    model.add_argument("--generator_config", nargs="+", type=key_value, default=[], metavar="KEY=VALUE",
                       help="a new generator's width=32 (channels), blocks=2 (residual blocks) and upsampling="
                            "pixel_shuffle (four values per 2x2 block) or bilinear (smoother noise, the same after "
                            "any crop offset); upsampling also switches a fine-tuned generator, whose head starts "
                            "from the mean of the four; key_dim=256 makes a keyed generator (owner keys, any "
                            "number of classes) instead of one conditioned on the dataset's classes")
    model.add_argument("--surrogate_model", nargs="+", default=["test_resnet"], metavar="NAME[:STEM]",
                       help="timm models trained from scratch; several average their min-min losses (noise easy for "
                            "several architectures transfers better). STEM full keeps the resolution (stride 1, no "
                            "max-pool), strided is timm's ImageNet stem, auto (default) is full at 64 px or less")
    model.add_argument("--label_predictor", nargs="+", type=int, default=None, metavar=("WIDTH", "EPOCHS"),
                       help="add a label predictor of this width for the label-free path, fitted for EPOCHS "
                            "(default 20) supervised epochs before the GAN steps (0: none; default: keep the "
                            "fine-tuned generator's, or none from scratch)")
    model.add_argument("--epsilon", type=float, default=8, help="noise bound in pixel levels out of 255")
    model.add_argument("--scraper_transforms", nargs="*", type=scraper_transform, default=[],
                       metavar="grayscale|jpeg[:LOW-HIGH]|color-jitter|resized-crop",
                       help="the surrogates see each protected image as it is or through one of these (drawn per "
                            "image), so the noise stays a shortcut after a scraper's grayscale, JPEG (quality "
                            "drawn in LOW-HIGH, default 10-50, for every JPEG), colour jitter or random resized crop "
                            "(35-100 %% of the area); A+B chains two, as a photo pipeline does "
                            "(resized-crop+color-jitter)")
    loss = parser.add_argument_group("losses")
    loss.add_argument("--loss_weights", type=float, nargs=3, default=[1.0, 1.0, 0.05],
                      metavar=("MIN_MIN", "NOISE", "ADV"),
                      help="weights of the min-min, noise-head and adversarial terms of the generator's loss "
                           "(default: 1 1 0.05)")
    loss.add_argument("--label_dropout", type=float, default=0.5,
                      help="probability of training a sample with the 'no label' code (the label-free path)")
    train = parser.add_argument_group("training")
    train.add_argument("--output_dir", type=Path, required=True, help="where the generator and checkpoints go")
    train.add_argument("--num_train_epochs", type=int, default=10, help="passes over the training rows")
    train.add_argument("--train_batch_size", type=int, default=128, help="images per step and process")
    train.add_argument("--learning_rates", type=float, nargs=3, default=[1e-3, 1e-3, 2e-4], metavar=("G", "F", "D"),
                       help="Adam learning rates of the generator, the surrogates and noise head, and the "
                            "discriminator (default: 0.001 0.001 0.0002)")
    train.add_argument("--seed", type=int, default=0, help="seed of initialisation, shuffling and augmentation")
    train.add_argument("--checkpointing_steps", type=int, default=500, help="save a checkpoint every N steps")
    train.add_argument("--resume_from_checkpoint", default=None, help="'latest' or a checkpoint-STEP folder")
    train.add_argument("--max_train_steps", type=int, default=None, help="stop after this many steps in all")
    train.add_argument("--max_train_minutes", type=float, default=None,
                       help="stop the GAN steps after this many minutes (label predictor fitting not counted), save "
                            "a checkpoint and the generator: a time-boxed run, resumable with --resume_from_checkpoint")
    train.add_argument("--report_to", default=None, help="tensorboard, wandb, ... (default: log to the console)")
    train.add_argument("--push_to_hub", default=None, metavar="ORG/NAME", help="upload the generator to this repo")


def parse_args(argv: list[str] | None = None) -> GeneratorTrainingConfig:
    """The run's settings from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_arguments(parser, test_split=False)
    add_arguments(parser)
    args = vars(parser.parse_args(argv))
    predictor = args.pop("label_predictor") or [None]
    if len(predictor) > 2:
        parser.error(f"--label_predictor takes WIDTH and optionally EPOCHS, got {len(predictor)} numbers")
    transforms = dict(args.pop("scraper_transforms"))
    generator = dict(args.pop("generator_config"))
    for key in ("generator_width", "generator_blocks", "key_dim"):
        if key in generator and not generator[key].isdigit():
            parser.error(f"--generator_config {key.removeprefix('generator_')}= takes a whole number")
        elif key in generator:
            generator[key] = int(generator[key])
    settings = {"surrogates": tuple(args.pop("surrogate_model")),
                "loss_weights": LossWeights(*args.pop("loss_weights")),
                "learning_rates": tuple(args.pop("learning_rates")), "scraper_transforms": tuple(transforms),
                "jpeg_quality": transforms.get("jpeg") or (10, 50), "label_predictor_width": predictor[0],
                "label_predictor_epochs": (predictor + [20])[1], **generator, **args}
    try:
        return GeneratorTrainingConfig(**settings)
    except ValueError as error:
        parser.error(str(error))


def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv)
    command = shlex.join(["accelerate", "launch", "-m", "training.train", *(sys.argv[1:] if argv is None else argv)])
    train_generator(config, command=command)


if __name__ == "__main__":
    main()
