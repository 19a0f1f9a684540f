"""Training a ConfounderGAN generator with 🤗 Accelerate: ``train_generator(GeneratorTrainingConfig(...))``.

The objective is ``losses.py``. Labels are a lever, not a requirement: with probability ``label_dropout`` G is
given the "no label" code instead of y, and must then infer the label from the image alone; that trains the
label-free path ("fast encryption" of new, unlabeled images) in the same model. With a label predictor
(``label_predictor_width``), G also gets a small classifier that guesses the class of unlabeled images, so the
label-free path adds the noise of the guessed class; it is fitted (supervised) before the GAN steps, then frozen.
With ``key_dim`` the generator is keyed instead (owner keys, ``losses.py``): each class of a batch gets a fresh
random key code, and the classes only decide which images share one.

``training/train.py`` is the command line over this module; the benchmark trains generators with it too.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast, set_seed
from torch import nn
from tqdm.auto import tqdm

from modeling_confounder import ConfounderDiscriminator, ConfounderGenerator
from modeling_confounder.generator import UPSAMPLING
from modeling_confounder.images import to_float

from . import losses
from .augmentation import check_transforms, crop_and_flip, scraper_transforms
from .data import ImageClassificationData, load_classification_data
from .fitting import Optimization, epoch_batches, fit_batches, make_optimizer
from .models import KEY_EMBEDDING, KeyReader, create_classifier, noise_head

SURROGATE_STEMS = {"auto": None, "full": True, "strided": False}  # -> create_classifier's small_input_stem


@dataclass
class GeneratorTrainingConfig:
    """The settings of a generator training run (``training/train.py``'s flags; see its ``--help``)."""

    output_dir: Path
    dataset_name: str | None = None  # not needed when train_generator is given the data
    image_column_name: str | None = None
    label_column_name: str | None = None
    train_split: str = "train"
    train_rows: tuple[int, int] | None = None
    resolution: int | None = None
    model: str | None = None  # a generator to fine-tune (folder or Hub id); None: from scratch
    generator_width: int = 32
    generator_blocks: int = 2
    generator_upsampling: str | None = None  # None: the fine-tuned generator's, or pixel_shuffle from scratch
    key_dim: int = 0  # > 0: a keyed generator (owner keys) from scratch; 0: classes, or the fine-tuned one's
    surrogates: tuple[str, ...] = ("test_resnet",)  # timm names, each NAME or NAME:STEM (auto, full, strided)
    label_predictor_width: int | None = None  # 0: none; None: the fine-tuned generator's, or none from scratch
    label_predictor_epochs: int = 20
    epsilon: float = 8  # pixel levels out of 255
    scraper_transforms: tuple[str, ...] = ()
    jpeg_quality: tuple[float, float] = (10, 50)
    loss_weights: losses.LossWeights = field(default_factory=losses.LossWeights)
    label_dropout: float = 0.5
    num_train_epochs: int = 10
    train_batch_size: int = 128  # per process
    learning_rates: tuple[float, float, float] = (1e-3, 1e-3, 2e-4)  # generator, surrogates + noise head, D
    mixed_precision: str | None = None  # None: Accelerate's (accelerate launch --mixed_precision)
    seed: int = 0
    checkpointing_steps: int = 500
    resume_from_checkpoint: str | None = None  # "latest" or a checkpoint-STEP folder
    max_train_steps: int | None = None
    max_train_minutes: float | None = None
    report_to: str | None = None
    push_to_hub: str | None = None  # ORG/NAME

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)
        if not 0 < self.epsilon <= 255:
            raise ValueError(f"epsilon is in pixel levels out of 255 (e.g. 8), got {self.epsilon}")
        if self.generator_upsampling not in (None, *UPSAMPLING):
            raise ValueError(f"upsampling must be one of {', '.join(UPSAMPLING)}, got {self.generator_upsampling!r}")
        check_transforms(self.scraper_transforms)
        self.surrogate_stems()

    def surrogate_stems(self) -> list[tuple[str, str]]:
        """(timm name, stem) of each surrogate."""
        return [split_surrogate(spec) for spec in self.surrogates]


def split_surrogate(spec: str) -> tuple[str, str]:
    """A surrogate ``NAME`` or ``NAME:STEM`` as (timm name, stem): a key of ``SURROGATE_STEMS``, auto when not given."""
    name, _, stem = spec.partition(":")
    if (stem or "auto") not in SURROGATE_STEMS:
        raise ValueError(f"surrogate {spec}: the stem is one of {', '.join(SURROGATE_STEMS)}")
    return name, stem or "auto"


def build_generator(config: GeneratorTrainingConfig, in_channels: int, num_classes: int,
                    resolution: int) -> tuple[ConfounderGenerator, bool]:
    """The generator to train, and whether its label predictor is new (and must be fitted first)."""
    epsilon = config.epsilon / 255
    if config.model is None:
        width = config.label_predictor_width or 0
        generator = ConfounderGenerator(in_channels=in_channels, num_classes=0 if config.key_dim else num_classes,
                                        width=config.generator_width, num_blocks=config.generator_blocks,
                                        epsilon=epsilon, predictor_width=width, predictor_resolution=resolution,
                                        upsampling=config.generator_upsampling or "pixel_shuffle",
                                        key_dim=config.key_dim)
        return generator, width > 0
    generator = ConfounderGenerator.from_pretrained(config.model)
    generator.register_to_config(epsilon=epsilon)
    pretrained = generator.config
    if pretrained.key_dim:  # a keyed generator takes any number of classes
        num_classes = pretrained.num_classes
    if (pretrained.in_channels, pretrained.num_classes) != (in_channels, num_classes):
        raise ValueError(f"{config.model} takes {pretrained.in_channels}-channel images and "
                         f"{pretrained.num_classes} classes, but the dataset has {in_channels} and {num_classes}; "
                         "train from scratch (omit --model) for this dataset")
    width = pretrained.predictor_width if config.label_predictor_width is None else config.label_predictor_width
    upsampling = config.generator_upsampling or pretrained.upsampling
    if (width, upsampling) == (pretrained.predictor_width, pretrained.upsampling):
        return generator, False
    # Everything else of the pretrained generator loads as it was.
    new_predictor = width != pretrained.predictor_width
    changes = {"upsampling": upsampling}
    if new_predictor:
        changes.update(predictor_width=width, predictor_resolution=resolution)
    rebuilt = ConfounderGenerator(**{**pretrained, **changes})
    kept = {key: value for key, value in generator.state_dict().items()
            if not (new_predictor and key.startswith("label_predictor."))}
    if upsampling != pretrained.upsampling:
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


def fit_label_predictor(generator: ConfounderGenerator, data: ImageClassificationData, epochs: int, seed: int,
                        accelerator: Accelerator) -> dict[str, float]:
    """Supervised training of a new label predictor (crop + flip, Adam, one-cycle schedule), then frozen.
    Returns its last epoch's training accuracy and its fitting time, for the model card.

    Runs before ``accelerator.prepare`` on every process alike; DDP then starts from rank 0's copy.
    """
    started = time.perf_counter()
    predictor = generator.label_predictor.to(accelerator.device)
    batch_size, count = 256, len(data.labels)
    optimizer, schedule = make_optimizer(predictor, Optimization("adam", 4e-3, warmup=0.3),
                                         epochs * -(-count // batch_size))
    shuffle = torch.Generator().manual_seed(seed)
    progress = tqdm(total=epochs * -(-count // batch_size), desc="label predictor",
                    disable=not accelerator.is_local_main_process)
    for _ in range(epochs):
        correct = fit_batches(predictor, optimizer, schedule, epoch_batches(count, batch_size, shuffle),
                              lambda indices: data.float_images(indices).to(accelerator.device), data.labels,
                              shuffle, on_step=progress.update)
        progress.set_postfix(train_acc=f"{correct / count:.3f}")
    progress.close()
    accelerator.print(f"label predictor: training accuracy {correct / count:.3f} in the last epoch")
    # Frozen from here on: the GAN steps only read its guesses, and DDP must not wait for its gradients.
    predictor.eval().requires_grad_(False)
    return {"label_predictor_train_acc": round(correct / count, 4),
            "label_predictor_seconds": round(time.perf_counter() - started, 1)}


@dataclass
class GanParts:
    """The networks, their optimizers (generator, helpers, discriminator) and the loader, as Accelerate
    prepared them; ``surrogate_names`` label the surrogates in the logs."""

    generator: nn.Module
    discriminator: nn.Module
    surrogates: nn.Module
    head: nn.Module
    loader: torch.utils.data.DataLoader
    optimizers: list[torch.optim.Optimizer]
    surrogate_names: list[str]


def prepare_parts(config: GeneratorTrainingConfig, generator: ConfounderGenerator, data: ImageClassificationData,
                  accelerator: Accelerator) -> GanParts:
    """The discriminator D, the surrogates f and the noise head h next to ``generator``, all prepared."""
    channels, num_classes, resolution = data.channels, data.num_classes, data.images.shape[1]
    discriminator = ConfounderDiscriminator(in_channels=channels)
    stems = config.surrogate_stems()
    key_dim = generator.config.key_dim
    outputs = KEY_EMBEDDING if key_dim else num_classes
    surrogates = nn.ModuleList(create_classifier(name, outputs, channels, resolution, SURROGATE_STEMS[stem])
                               for name, stem in stems)
    # The same model with two stems is two surrogates: name both in the logs.
    names = [name for name, _ in stems]
    surrogate_names = [f"{name}_{stem}" if names.count(name) > 1 else name for name, stem in stems]
    head = noise_head(channels, outputs)
    if key_dim:
        surrogates = nn.ModuleList(KeyReader(surrogate, key_dim) for surrogate in surrogates)
        head = KeyReader(head, key_dim)
    generator_rate, helper_rate, discriminator_rate = config.learning_rates
    optimizers = [
        torch.optim.Adam(generator.parameters(), lr=generator_rate, betas=(0.5, 0.999)),
        torch.optim.Adam([*surrogates.parameters(), *head.parameters()], lr=helper_rate),
        torch.optim.Adam(discriminator.parameters(), lr=discriminator_rate, betas=(0.5, 0.999)),
    ]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data.images, data.labels),
                                         batch_size=config.train_batch_size, shuffle=True, drop_last=True)
    generator, discriminator, surrogates, head, loader, *optimizers = accelerator.prepare(
        generator, discriminator, surrogates, head, loader, *optimizers)
    return GanParts(generator, discriminator, surrogates, head, loader, optimizers, surrogate_names)


def update(accelerator: Accelerator, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    accelerator.backward(loss)
    optimizer.step()


def train_step(parts: GanParts, accelerator: Accelerator, config: GeneratorTrainingConfig, epsilon: float,
               images_uint8: torch.Tensor, labels: torch.Tensor, rng: torch.Generator) -> dict[str, float]:
    """One alternating step on a batch (``losses.py``): the helpers, then D, then G. Returns the logs."""
    images = to_float(images_uint8)
    codes, labels, keys = condition(accelerator.unwrap_model(parts.generator).config.key_dim, labels,
                                    config.label_dropout, rng)
    generator_optimizer, helper_optimizer, discriminator_optimizer = parts.optimizers
    # 1. surrogates, noise head and discriminator on the current noise
    with accelerator.autocast():
        noise = parts.generator(images, codes)
        protected = (images + noise).clamp(0, 1)
        # What a victim learns from: the scraper's transforms of the whole set, then crop and flip.
        scraped = scraper_transforms(protected, config.scraper_transforms, config.jpeg_quality, rng)
        helper_loss, surrogate_logits, head_logits = losses.helper_loss(
            parts.surrogates, parts.head, crop_and_flip(scraped.detach(), rng), noise, epsilon, labels, keys)
    update(accelerator, helper_optimizer, helper_loss)
    with accelerator.autocast():
        discriminator_loss = losses.discriminator_loss(parts.discriminator, images, protected)
    update(accelerator, discriminator_optimizer, discriminator_loss)
    # 2. the generator through all three
    with accelerator.autocast():
        generator_loss, terms = losses.generator_loss(
            parts.surrogates, parts.head, parts.discriminator, crop_and_flip(scraped, rng), noise, protected,
            epsilon, labels, config.loss_weights, keys)
    update(accelerator, generator_optimizer, generator_loss)
    return {"loss/generator": generator_loss.item(), **{f"loss/{name}": term.item() for name, term in terms.items()},
            "loss/discriminator": discriminator_loss.item(),
            **{f"acc/surrogate_{name}": (logits.argmax(1) == labels).float().mean().item()
               for name, logits in zip(parts.surrogate_names, surrogate_logits)},
            "acc/noise_head": (head_logits.argmax(1) == labels).float().mean().item()}


def condition(key_dim: int, labels: torch.Tensor, label_dropout: float,
              rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """What G is given, the helpers' targets and the batch's keys. Classes: the labels, each dropped to "no
    label" with probability ``label_dropout``. Keyed: a fresh random key code per class of the batch, and the
    targets say which of these keys each image has."""
    if not key_dim:
        dropped = torch.rand(len(labels), device=labels.device) < label_dropout
        return torch.where(dropped, -1, labels), labels, None
    classes, targets = labels.unique(return_inverse=True)
    keys = torch.randn(len(classes), key_dim, generator=rng).to(labels.device)
    return keys[targets], targets, keys


def out_of_time(accelerator: Accelerator, started: float, minutes: float | None) -> bool:
    """Whether ``minutes`` have passed since ``started``, as the main process sees it: every process stops at the
    same step, or DDP would wait forever for the one that went on."""
    if minutes is None:
        return False
    spent = torch.tensor(float(time.perf_counter() - started > 60 * minutes), device=accelerator.device)
    return bool(broadcast(spent).item())


def latest_checkpoint(output_dir: Path, requested: str) -> Path | None:
    """The ``checkpoint-STEP`` folder to resume from: the given one, or with "latest" the highest step's."""
    if requested != "latest":
        return Path(requested) if Path(requested).is_dir() else output_dir / requested
    checkpoints = sorted(output_dir.glob("checkpoint-*"), key=lambda path: int(path.name.split("-")[1]))
    return checkpoints[-1] if checkpoints else None


def resume(accelerator: Accelerator, config: GeneratorTrainingConfig) -> int:
    """Loads the checkpoint of ``resume_from_checkpoint`` (if any); returns the step to go on from."""
    if not config.resume_from_checkpoint:
        return 0
    checkpoint = latest_checkpoint(config.output_dir, config.resume_from_checkpoint)
    if checkpoint is None or not checkpoint.is_dir():
        raise FileNotFoundError(f"no checkpoint to resume from at {checkpoint or config.output_dir}")
    accelerator.load_state(str(checkpoint))
    step = int(checkpoint.name.split("-")[1])
    accelerator.print(f"resumed from {checkpoint} at step {step}")
    return step


def log(accelerator: Accelerator, bar: tqdm, logs: dict[str, float], step: int, total_steps: int,
        report_to: str | None) -> None:
    """To the progress bar, and to the trackers or (every 50 steps and at the end) the console."""
    bar.set_postfix({key.replace("loss/", "").replace("/", "_"): f"{value:.3f}"
                     for key, value in logs.items() if key != "epoch"})
    if report_to:
        accelerator.log(logs, step=step)
    elif step % 50 == 0 or step == total_steps:
        accelerator.print(f"step {step}/{total_steps} " + " ".join(f"{k}={v:.4f}" for k, v in logs.items()))


def run_steps(parts: GanParts, accelerator: Accelerator, config: GeneratorTrainingConfig, step: int,
              total_steps: int, started: float) -> tuple[int, dict[str, float]]:
    """The GAN steps from ``step`` to ``total_steps`` (fewer past ``max_train_minutes``), with checkpoints.
    Returns the last step and its logs."""
    steps_per_epoch = len(parts.loader)
    epsilon = accelerator.unwrap_model(parts.generator).config.epsilon
    rng = torch.Generator().manual_seed(config.seed + accelerator.process_index)
    bar = tqdm(total=total_steps, initial=step, desc="training", disable=not accelerator.is_local_main_process)
    logs: dict[str, float] = {}
    while step < total_steps:
        epoch, skip = divmod(step, steps_per_epoch)
        for images_uint8, labels in accelerator.skip_first_batches(parts.loader, skip) if skip else parts.loader:
            logs = {**train_step(parts, accelerator, config, epsilon, images_uint8, labels, rng), "epoch": epoch}
            step += 1
            bar.update()
            if step < total_steps and out_of_time(accelerator, started, config.max_train_minutes):
                accelerator.print(f"--max_train_minutes {config.max_train_minutes:g}: stopping at step {step} of "
                                  f"{total_steps}")
                total_steps = step
            log(accelerator, bar, logs, step, total_steps, config.report_to)
            if step % config.checkpointing_steps == 0 or step == total_steps:
                accelerator.save_state(str(config.output_dir / f"checkpoint-{step}"))
            if step >= total_steps:
                break
    bar.close()
    return step, logs


def write_model_card(config: GeneratorTrainingConfig, history: dict, command: str | None = None) -> None:
    """README.md next to the weights: what the model does, how it was trained, its final training metrics."""
    settings = json.dumps(asdict(config), default=str)
    how = f"`{command}`" if command else "`training.gan.train_generator`"
    (config.output_dir / "README.md").write_text(
        "---\nlibrary_name: diffusers\ntags: [confoundergan, privacy, unlearnable-examples]\n---\n\n"
        "# ConfounderGAN generator\n\n"
        "Adds bounded noise (|δ| ≤ ε) that makes images unlearnable for classifiers trained on them "
        "(Tian et al., NeurIPS 2022, arXiv 2212.01767). Load with `ConfounderGenerator.from_pretrained` from "
        "`modeling_confounder`.\n\n"
        f"Trained with {how}; settings: `{settings}`.\n\n"
        f"Final training metrics: `{json.dumps(history)}`\n")


def train_generator(config: GeneratorTrainingConfig, data: ImageClassificationData | None = None, *,
                    command: str | None = None) -> ConfounderGenerator:
    """Trains (or fine-tunes) a generator; saves it, its model card and checkpoints to ``config.output_dir``.

    ``data``: the training images, instead of loading ``config.dataset_name``. ``command``: the command line
    to name in the model card. Returns the trained generator (every process gets it).
    """
    accelerator = Accelerator(mixed_precision=config.mixed_precision, log_with=config.report_to,
                              project_dir=str(config.output_dir))
    set_seed(config.seed)
    if data is None:
        if config.dataset_name is None:
            raise ValueError("train_generator needs data or a config.dataset_name to load it from")
        with accelerator.main_process_first():
            data = load_classification_data(config.dataset_name, config.train_split, config.image_column_name,
                                            config.label_column_name, config.train_rows, config.resolution)
    generator, new_predictor = build_generator(config, data.channels, data.num_classes, data.images.shape[1])
    predictor_fit = {}
    if new_predictor and config.label_predictor_epochs > 0:
        predictor_fit = fit_label_predictor(generator, data, config.label_predictor_epochs, config.seed, accelerator)
    elif generator.label_predictor is not None:
        generator.label_predictor.eval().requires_grad_(False)
    parts = prepare_parts(config, generator, data, accelerator)
    total_steps = config.num_train_epochs * len(parts.loader)
    if config.max_train_steps is not None:
        total_steps = min(total_steps, config.max_train_steps)
    step = resume(accelerator, config)
    if config.report_to:
        accelerator.init_trackers("confoundergan", config={k: str(v) for k, v in asdict(config).items()})
    started = time.perf_counter()
    step, logs = run_steps(parts, accelerator, config, step, total_steps, started)
    accelerator.wait_for_everyone()
    trained = accelerator.unwrap_model(parts.generator)
    if accelerator.is_main_process:
        trained.save_pretrained(config.output_dir)
        write_model_card(config, {**logs, "seconds": round(time.perf_counter() - started, 1), "steps": step,
                                  **predictor_fit}, command)
        if config.push_to_hub:
            trained.push_to_hub(config.push_to_hub)
    accelerator.end_training()
    return trained
