"""Train a ConfounderGAN generator with 🤗 Accelerate on a 🤗 image-classification dataset.

ConfounderGAN (Tian et al., NeurIPS 2022): the generator G adds noise δ = G(x, y), |δ| ≤ ε, that acts as a causal
confounder of the image and its label, so a classifier trained on (x + δ, y) learns the easy δ → y shortcut and
fails on clean images. Each step alternates two updates (tensors are NCHW float in [0, 1], ε in pixel/255):

1. The helpers, on the current noise (detached):
   - surrogate f (any timm model, from scratch; several average their losses, so the noise is easy for more than
     one architecture) on crop+flip(x + δ) with the true labels. ``--surrogate_stem strided`` keeps timm's
     ImageNet stem at small resolutions (cheaper; EM noise made against it transfers); ``--scraper_transforms grayscale
     jpeg`` shows f some images in gray or through a differentiable JPEG first, as a scraper's cleanup would;
   - noise head h, a small CNN that sees δ / ε alone, on the true labels;
   - discriminator D: clean x is real, x + δ is fake.
2. The generator, through all three:
   L_G = w_min_min · CE(f(crop+flip(x + δ)), y)      error-minimising "min-min" term (Huang et al., ICLR 2021):
                                                    protected images must be easy to fit, so a victim fits the noise
       + w_noise · CE(h(δ / ε), y)                  δ alone must predict y: the confounder carries the label
       + w_adv · softplus(−D(x + δ))                non-saturating GAN term: x + δ must look like a clean image.

Labels are a lever, not a requirement: with probability ``--label_dropout`` G is given the "no label" code instead
of y, and must then infer the label from the image alone. That trains the label-free path ("fast encryption" of
new, unlabeled images) in the same model; ``generator.protect(images, labels=...)`` uses the labelled path.
With ``--label_predictor_width``, G also gets a small classifier that guesses the class of unlabeled images, so the
label-free path adds the noise of the guessed class; it is fitted (supervised) before the GAN steps, then frozen.
Add one to a trained generator without retraining the noise:

    accelerate launch training/train_confounder.py --dataset_name ../shared/data/cifar10 \
        --max_train_samples 25000 --pretrained_model_name_or_path runs/cifar10-default \
        --label_predictor_width 16 --label_predictor_epochs 120 --max_train_steps 0 --output_dir runs/cifar10-predictor120

Launch (the default weights shipped in the package; CIFAR-10 rows 0-24,999, 2 CPU cores):

    accelerate launch --cpu --num_processes 1 training/train_confounder.py \
        --dataset_name ../shared/data/cifar10 --max_train_samples 25000 --output_dir runs/cifar10-default

Many GPUs (the same script; Accelerate shards the data):

    accelerate launch --multi_gpu --num_processes 8 training/train_confounder.py \
        --dataset_name uoft-cs/cifar10 --output_dir runs/cifar10 --mixed_precision bf16 --train_batch_size 256

Fine-tune the shipped generator on another dataset (grayscale works; the classes must match the generator's):

    accelerate launch training/train_confounder.py --dataset_name ../shared/data/pneumoniamnist \
        --output_dir runs/pneumonia --num_train_epochs 5

Resume: ``--resume_from_checkpoint latest`` (or a ``checkpoint-STEP`` folder) continues where a run stopped.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import broadcast, set_seed
from augmentation import SCRAPER_TRANSFORMS, crop_and_flip, scraper_transforms
from torch import nn
from tqdm.auto import tqdm

from modeling_confounder import ConfounderDiscriminator, ConfounderGenerator
from modeling_confounder.classifiers import create_classifier
from modeling_confounder.data import load_classification_data
from modeling_confounder.generator import UPSAMPLING


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    data = parser.add_argument_group("data")
    data.add_argument("--dataset_name", required=True,
                      help="Hub id, local folder that datasets.load_dataset reads, or a save_to_disk folder")
    data.add_argument("--image_column_name", default=None, help="default: the first Image column")
    data.add_argument("--label_column_name", default=None, help="default: the first ClassLabel column")
    data.add_argument("--train_split", default="train")
    data.add_argument("--max_train_samples", type=int, default=None, help="use only the first N rows")
    data.add_argument("--resolution", type=int, default=None,
                      help="centre-crop and resize to this square size (default: the images' own size)")
    model = parser.add_argument_group("model")
    model.add_argument("--pretrained_model_name_or_path", default=None,
                       help="fine-tune this generator (folder or Hub id) instead of starting from scratch")
    model.add_argument("--generator_width", type=int, default=32)
    model.add_argument("--generator_blocks", type=int, default=2)
    model.add_argument("--generator_upsampling", choices=UPSAMPLING, default=None,
                       help="pixel_shuffle: four values per 2x2 block; bilinear: smoother noise, the same after any "
                            "crop offset (default: the pretrained generator's, or pixel_shuffle from scratch); "
                            "switching a pretrained generator starts its head from the mean of the four")
    model.add_argument("--surrogate_model", nargs="+", default=["test_resnet"],
                       help="timm model names, trained from scratch; several form an ensemble whose min-min losses "
                            "are averaged (noise that is easy for several architectures transfers better)")
    model.add_argument("--surrogate_stem", nargs="+", choices=["auto", "full", "strided"], default=["auto"],
                       help="one for all surrogates or one per surrogate. full: the stem keeps the resolution "
                            "(stride 1, no max-pool); strided: timm's ImageNet stem; auto: full at 64 px or less")
    model.add_argument("--label_predictor_width", type=int, default=None,
                       help="add a label predictor of this width for the label-free path (0: none; default: keep "
                            "the pretrained generator's, or none when training from scratch)")
    model.add_argument("--label_predictor_epochs", type=int, default=20,
                       help="supervised epochs for a new label predictor, before the GAN steps")
    model.add_argument("--epsilon", type=float, default=8, help="noise bound in pixel levels out of 255")
    model.add_argument("--scraper_transforms", nargs="*", choices=SCRAPER_TRANSFORMS, default=[],
                       help="the surrogate sees each protected image as it is or through one of these (drawn per "
                            "image), so the noise stays a shortcut after a scraper's grayscale or JPEG")
    model.add_argument("--jpeg_quality", type=float, nargs=2, default=[10, 50], metavar=("LOW", "HIGH"),
                       help="JPEG quality range of --scraper_transforms jpeg")
    loss = parser.add_argument_group("losses")
    loss.add_argument("--min_min_weight", type=float, default=1.0)
    loss.add_argument("--noise_head_weight", type=float, default=1.0)
    loss.add_argument("--adversarial_weight", type=float, default=0.05)
    loss.add_argument("--label_dropout", type=float, default=0.5,
                      help="probability of training a sample with the 'no label' code (the label-free path)")
    train = parser.add_argument_group("training")
    train.add_argument("--output_dir", type=Path, required=True)
    train.add_argument("--num_train_epochs", type=int, default=10)
    train.add_argument("--train_batch_size", type=int, default=128, help="per process")
    train.add_argument("--learning_rate", type=float, default=1e-3, help="generator (Adam)")
    train.add_argument("--surrogate_learning_rate", type=float, default=1e-3, help="surrogate and noise head (Adam)")
    train.add_argument("--discriminator_learning_rate", type=float, default=2e-4)
    train.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default=None)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--checkpointing_steps", type=int, default=500)
    train.add_argument("--resume_from_checkpoint", default=None, help="'latest' or a checkpoint-STEP folder")
    train.add_argument("--max_train_steps", type=int, default=None, help="stop after this many steps in all")
    train.add_argument("--max_train_minutes", type=float, default=None,
                       help="stop the GAN steps after this many minutes (label predictor fitting not counted), save "
                            "a checkpoint and the generator: a time-boxed run, resumable with --resume_from_checkpoint")
    train.add_argument("--report_to", default=None, help="tensorboard, wandb, ... (default: log to the console)")
    train.add_argument("--push_to_hub", action="store_true")
    train.add_argument("--hub_model_id", default=None)
    args = parser.parse_args(argv)
    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id ORG/NAME")
    if len(args.surrogate_stem) not in (1, len(args.surrogate_model)):
        parser.error(f"--surrogate_stem takes one stem for all surrogates or one per surrogate "
                     f"({len(args.surrogate_model)}), got {len(args.surrogate_stem)}")
    if not 0 < args.epsilon <= 255:
        parser.error(f"--epsilon is in pixel levels out of 255 (e.g. 8), got {args.epsilon}")
    return args


def noise_head(in_channels: int, num_classes: int) -> nn.Module:
    """h: predicts the label from δ / ε alone. Small on purpose: the label must be easy to read off the noise."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes))


def build_generator(args: argparse.Namespace, in_channels: int, num_classes: int,
                    resolution: int) -> tuple[ConfounderGenerator, bool]:
    """The generator to train, and whether its label predictor is new (and must be fitted first)."""
    epsilon = args.epsilon / 255
    if args.pretrained_model_name_or_path is None:
        width = args.label_predictor_width or 0
        generator = ConfounderGenerator(in_channels=in_channels, num_classes=num_classes,
                                        width=args.generator_width, num_blocks=args.generator_blocks,
                                        epsilon=epsilon, predictor_width=width, predictor_resolution=resolution,
                                        upsampling=args.generator_upsampling or "pixel_shuffle")
        return generator, width > 0
    generator = ConfounderGenerator.from_pretrained(args.pretrained_model_name_or_path)
    config = generator.config
    if (config.in_channels, config.num_classes) != (in_channels, num_classes):
        raise ValueError(f"{args.pretrained_model_name_or_path} takes {config.in_channels}-channel images and "
                         f"{config.num_classes} classes, but the dataset has {in_channels} and {num_classes}; "
                         "train from scratch (omit --pretrained_model_name_or_path) for this dataset")
    generator.register_to_config(epsilon=epsilon)
    width = config.predictor_width if args.label_predictor_width is None else args.label_predictor_width
    upsampling = args.generator_upsampling or config.upsampling
    if (width, upsampling) == (config.predictor_width, config.upsampling):
        return generator, False
    # Everything else of the pretrained generator loads as it was.
    new_predictor = width != config.predictor_width
    changes = {"upsampling": upsampling}
    if new_predictor:
        changes.update(predictor_width=width, predictor_resolution=resolution)
    rebuilt = ConfounderGenerator(**{**config, **changes})
    kept = {key: value for key, value in generator.state_dict().items()
            if not (new_predictor and key.startswith("label_predictor."))}
    if upsampling != config.upsampling:
        kept.update(converted_head(kept.pop("head.weight"), kept.pop("head.bias"), upsampling))
    rebuilt.load_state_dict(kept, strict=False)
    return rebuilt, new_predictor and width > 0


def converted_head(weight: torch.Tensor, bias: torch.Tensor, upsampling: str) -> dict[str, torch.Tensor]:
    """The head for the other upsampling, making about the same noise: pixel shuffle's four sub-pixel filters
    (output channel ``4c + k`` for channel c) averaged into one, or one filter repeated four times."""
    if upsampling == "bilinear":
        channels = weight.shape[0] // 4
        return {"head.weight": weight.reshape(channels, 4, *weight.shape[1:]).mean(1),
                "head.bias": bias.reshape(channels, 4).mean(1)}
    return {"head.weight": weight.repeat_interleave(4, 0), "head.bias": bias.repeat_interleave(4)}


def fit_label_predictor(generator: ConfounderGenerator, data, args: argparse.Namespace,
                        accelerator: Accelerator) -> dict[str, float]:
    """Supervised training of a new label predictor (crop + flip, Adam, cosine schedule), then frozen.
    Returns its last epoch's training accuracy and its fitting time, for the model card.

    Runs before ``accelerator.prepare`` on every process alike; DDP then starts from rank 0's copy.
    """
    started = time.perf_counter()
    predictor = generator.label_predictor.to(accelerator.device).train()
    optimizer = torch.optim.Adam(predictor.parameters(), lr=2e-3, weight_decay=5e-4)
    batches = -(-len(data.labels) // 256)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 4e-3, total_steps=args.label_predictor_epochs * batches)
    shuffle = torch.Generator().manual_seed(args.seed)
    progress = tqdm(total=args.label_predictor_epochs * batches, desc="label predictor",
                    disable=not accelerator.is_local_main_process)
    for _ in range(args.label_predictor_epochs):
        correct = 0
        for indices in torch.randperm(len(data.labels), generator=shuffle).split(256):
            images = crop_and_flip(data.float_images(indices).to(accelerator.device), shuffle)
            labels = data.labels[indices].to(accelerator.device)
            logits = predictor(images)
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            correct += (logits.argmax(1) == labels).sum().item()
            progress.update()
        progress.set_postfix(train_acc=f"{correct / len(data.labels):.3f}")
    progress.close()
    accelerator.print(f"label predictor: training accuracy {correct / len(data.labels):.3f} in the last epoch")
    # Frozen from here on: the GAN steps only read its guesses, and DDP must not wait for its gradients.
    predictor.eval().requires_grad_(False)
    return {"label_predictor_train_acc": round(correct / len(data.labels), 4),
            "label_predictor_seconds": round(time.perf_counter() - started, 1)}


def out_of_time(accelerator: Accelerator, started: float, minutes: float | None) -> bool:
    """Whether ``minutes`` have passed since ``started``, as the main process sees it: every process stops at the
    same step, or DDP would wait forever for the one that went on."""
    if minutes is None:
        return False
    spent = torch.tensor(float(time.perf_counter() - started > 60 * minutes), device=accelerator.device)
    return bool(broadcast(spent).item())


def latest_checkpoint(output_dir: Path, requested: str) -> Path | None:
    if requested != "latest":
        return Path(requested) if Path(requested).is_dir() else output_dir / requested
    checkpoints = sorted(output_dir.glob("checkpoint-*"), key=lambda path: int(path.name.split("-")[1]))
    return checkpoints[-1] if checkpoints else None


def write_model_card(output_dir: Path, args: argparse.Namespace, history: dict) -> None:
    command = " ".join(f"--{key} {' '.join(map(str, value)) if isinstance(value, list) else value}"
                       for key, value in vars(args).items()
                       if value not in (None, False, []) and key not in ("push_to_hub", "hub_model_id"))
    (output_dir / "README.md").write_text(
        "---\nlibrary_name: diffusers\ntags: [confoundergan, privacy, unlearnable-examples]\n---\n\n"
        "# ConfounderGAN generator\n\n"
        "Adds bounded noise (|δ| ≤ ε) that makes images unlearnable for classifiers trained on them "
        "(Tian et al., NeurIPS 2022). Load with `ConfounderGenerator.from_pretrained` from `modeling_confounder`.\n\n"
        f"Trained with `training/train_confounder.py {command}`.\n\n"
        f"Final training metrics: `{json.dumps(history)}`\n")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    accelerator = Accelerator(mixed_precision=args.mixed_precision, log_with=args.report_to,
                              project_dir=str(args.output_dir))
    set_seed(args.seed)
    with accelerator.main_process_first():
        data = load_classification_data(args.dataset_name, args.train_split, args.image_column_name,
                                        args.label_column_name,
                                        (0, args.max_train_samples) if args.max_train_samples else None,
                                        args.resolution)
    channels, num_classes = data.channels, data.num_classes
    resolution = data.images.shape[1]
    generator, new_predictor = build_generator(args, channels, num_classes, resolution)
    predictor_fit = {}
    if new_predictor and args.label_predictor_epochs > 0:
        predictor_fit = fit_label_predictor(generator, data, args, accelerator)
    elif generator.label_predictor is not None:
        generator.label_predictor.eval().requires_grad_(False)
    discriminator = ConfounderDiscriminator(in_channels=channels)
    stems = args.surrogate_stem * len(args.surrogate_model) if len(args.surrogate_stem) == 1 else args.surrogate_stem
    small_input_stem = {"auto": None, "full": True, "strided": False}
    surrogates = nn.ModuleList(create_classifier(name, num_classes, channels, resolution, small_input_stem[stem])
                               for name, stem in zip(args.surrogate_model, stems))
    # The same model with two stems is two surrogates: name both in the logs.
    surrogate_names = [f"{name}_{stem}" if args.surrogate_model.count(name) > 1 else name
                       for name, stem in zip(args.surrogate_model, stems)]
    head = noise_head(channels, num_classes)
    optimizers = [
        torch.optim.Adam(generator.parameters(), lr=args.learning_rate, betas=(0.5, 0.999)),
        torch.optim.Adam([*surrogates.parameters(), *head.parameters()], lr=args.surrogate_learning_rate),
        torch.optim.Adam(discriminator.parameters(), lr=args.discriminator_learning_rate, betas=(0.5, 0.999)),
    ]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data.images, data.labels),
                                         batch_size=args.train_batch_size, shuffle=True, drop_last=True)
    generator, discriminator, surrogates, head, loader, *optimizers = accelerator.prepare(
        generator, discriminator, surrogates, head, loader, *optimizers)
    generator_optimizer, helper_optimizer, discriminator_optimizer = optimizers

    steps_per_epoch = len(loader)
    total_steps = args.num_train_epochs * steps_per_epoch
    if args.max_train_steps is not None:
        total_steps = min(total_steps, args.max_train_steps)
    step = 0
    if args.resume_from_checkpoint:
        checkpoint = latest_checkpoint(args.output_dir, args.resume_from_checkpoint)
        if checkpoint is None or not checkpoint.is_dir():
            raise FileNotFoundError(f"no checkpoint to resume from at {checkpoint or args.output_dir}")
        accelerator.load_state(str(checkpoint))
        step = int(checkpoint.name.split("-")[1])
        accelerator.print(f"resumed from {checkpoint} at step {step}")
    if args.report_to:
        accelerator.init_trackers("confoundergan", config={k: str(v) for k, v in vars(args).items()})

    unwrapped = accelerator.unwrap_model(generator)
    epsilon = unwrapped.config.epsilon
    augmentation_rng = torch.Generator().manual_seed(args.seed + accelerator.process_index)
    bar = tqdm(total=total_steps, initial=step, desc="training", disable=not accelerator.is_local_main_process)
    started = time.perf_counter()
    logs: dict[str, float] = {}
    while step < total_steps:
        epoch, skip = divmod(step, steps_per_epoch)
        epoch_loader = accelerator.skip_first_batches(loader, skip) if skip else loader
        for images_uint8, labels in epoch_loader:
            images = images_uint8.permute(0, 3, 1, 2).float() / 255
            dropped = torch.rand(len(labels), device=labels.device) < args.label_dropout
            codes = torch.where(dropped, -1, labels)

            # 1. surrogate, noise head and discriminator on the current noise
            with accelerator.autocast():
                noise = generator(images, codes)
                protected = (images + noise).clamp(0, 1)
                # What a victim learns from: the scraper's transforms of the whole set, then crop and flip.
                scraped = scraper_transforms(protected, args.scraper_transforms, args.jpeg_quality, augmentation_rng)
                augmented = crop_and_flip(scraped.detach(), augmentation_rng)
                surrogate_logits = [surrogate(augmented) for surrogate in surrogates]
                head_logits = head(noise.detach() / epsilon)
                helper_loss = (sum(F.cross_entropy(logits, labels) for logits in surrogate_logits)
                               + F.cross_entropy(head_logits, labels))
            helper_optimizer.zero_grad(set_to_none=True)
            accelerator.backward(helper_loss)
            helper_optimizer.step()
            with accelerator.autocast():
                # One forward pass for both halves: DDP allows one forward per backward.
                real_logits, fake_logits = discriminator(torch.cat([images, protected.detach()])).chunk(2)
                discriminator_loss = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
            discriminator_optimizer.zero_grad(set_to_none=True)
            accelerator.backward(discriminator_loss)
            discriminator_optimizer.step()

            # 2. generator through all three
            with accelerator.autocast():
                augmented = crop_and_flip(scraped, augmentation_rng)
                min_min_loss = sum(F.cross_entropy(surrogate(augmented), labels)
                                   for surrogate in surrogates) / len(surrogates)
                noise_head_loss = F.cross_entropy(head(noise / epsilon), labels)
                adversarial_loss = F.softplus(-discriminator(protected)).mean()
                generator_loss = (args.min_min_weight * min_min_loss + args.noise_head_weight * noise_head_loss
                                  + args.adversarial_weight * adversarial_loss)
            generator_optimizer.zero_grad(set_to_none=True)
            accelerator.backward(generator_loss)
            generator_optimizer.step()

            step += 1
            bar.update()
            if step < total_steps and out_of_time(accelerator, started, args.max_train_minutes):
                accelerator.print(f"--max_train_minutes {args.max_train_minutes:g}: stopping at step {step} of "
                                  f"{total_steps}")
                total_steps = step
            logs = {"loss/generator": generator_loss.item(), "loss/min_min": min_min_loss.item(),
                    "loss/noise_head": noise_head_loss.item(), "loss/adversarial": adversarial_loss.item(),
                    "loss/discriminator": discriminator_loss.item(),
                    **{f"acc/surrogate_{name}": (logits.argmax(1) == labels).float().mean().item()
                       for name, logits in zip(surrogate_names, surrogate_logits)},
                    "acc/noise_head": (head_logits.argmax(1) == labels).float().mean().item(),
                    "epoch": epoch}
            bar.set_postfix({key.replace("loss/", "").replace("/", "_"): f"{value:.3f}"
                             for key, value in logs.items() if key != "epoch"})
            if args.report_to:
                accelerator.log(logs, step=step)
            elif step % 50 == 0 or step == total_steps:
                accelerator.print(f"step {step}/{total_steps} " + " ".join(f"{k}={v:.4f}" for k, v in logs.items()))
            if step % args.checkpointing_steps == 0 or step == total_steps:
                accelerator.save_state(str(args.output_dir / f"checkpoint-{step}"))
            if step >= total_steps:
                break
    bar.close()

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(generator)
        unwrapped.save_pretrained(args.output_dir)
        write_model_card(args.output_dir, args, {**logs, "seconds": round(time.perf_counter() - started, 1),
                                                 "steps": step, **predictor_fit})
        if args.push_to_hub:
            unwrapped.push_to_hub(args.hub_model_id)
    accelerator.end_training()


if __name__ == "__main__":
    main()
