"""Train a victim classifier, as a data scraper would, and measure it on clean test images.

Used by ``training.evaluate`` and the benchmark. ``train_victim`` trains timm models (and the pretrained victims)
in this project's loop; ``train_with_trainer`` trains 🤗 ``transformers`` models with the ``Trainer``, as that
library's image-classification guide does. ``train_victim``'s augmentation: a random crop with zero padding of
1/8 of the side (4 px at 32×32) and a horizontal flip; SGD with Nesterov momentum and a one-cycle schedule
(``fitting.py``).
Tensor conventions: images are uint8 NHWC tensors until batched, then NCHW float in [0, 1].
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from modeling_confounder.images import array_to_pil, to_float
from modeling_confounder.pipeline import default_device
from modeling_confounder.quality import image_quality

from .fitting import BatchTransform, Optimization, epoch_batches, fit_batches, make_optimizer
from .models import create_classifier
from .transformers_models import TransformersClassifier, import_transformers

TRAINER_LEARNING_RATE = 2e-3  # AdamW's peak for train_with_trainer: see docs/benchmark.md (clothing protocol)
TRAINER_BATCH_SIZE = 64


@dataclass
class VictimResult:
    """One victim run: clean test accuracy after the last epoch and at its best, training accuracy in the last
    epoch, seconds, the accuracy after each epoch on the validation images (the test images when there are
    none), whether it trained under bfloat16, and the balanced test accuracy after the last epoch (the mean of
    the per-class accuracies, for unbalanced test sets). With validation images the test images are seen once,
    after the last epoch, and ``best_test_acc`` is None."""

    victim: str
    setting: str
    test_acc: float
    best_test_acc: float | None
    train_acc: float
    seconds: float
    history: list[float] = field(default_factory=list)
    bf16: bool = False
    balanced_test_acc: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def cpu_name() -> str:
    """The CPU model, and whether it has the AVX512-BF16 that makes ``bf16`` victims fast. ``platform.processor``
    is empty on Linux, so there it comes from /proc/cpuinfo."""
    cpuinfo = Path("/proc/cpuinfo")
    info = cpuinfo.read_text() if cpuinfo.exists() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", info, re.MULTILINE)
    name = model.group(1).strip() if model else platform.processor() or platform.system()
    return name + (" with AVX512-BF16" if re.search(r"\bavx512_bf16\b", info) else "")


def hardware_summary() -> str:
    """Machine, CPU, GPU (or CPU threads) and torch version, for reports."""
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"{torch.get_num_threads()} CPU threads"
    return f"{platform.machine()} {cpu_name()}, {device}, torch {torch.__version__}"


def as_float(images: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """uint8 NHWC images as float NCHW in [0, 1] on ``device``, channels-last in memory as the victims are."""
    return to_float(images.to(device)).contiguous(memory_format=torch.channels_last)


@torch.inference_mode()
def logits(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """``model``'s float logits for uint8 NHWC ``images``, on the CPU, in eval mode."""
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([model(as_float(images[start:start + batch_size], device)).float().cpu()
                      for start in range(0, len(images), batch_size)])


def balanced_accuracy(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    """The mean over the classes present in ``labels`` of the share of their images predicted right."""
    return torch.stack([(predicted[labels == label] == label).float().mean()
                        for label in labels.unique()]).mean().item()


def protection_quality(clean: np.ndarray, protected: np.ndarray) -> dict[str, float | None]:
    """Mean PSNR and SSIM over two sets of uint8 NHWC images (SSIM None for images smaller than its 7×7
    window), and the largest per-pixel change (in [0, 1] units and in pixel levels)."""
    measured = [image_quality(a, b) for a, b in zip(clean, protected)]
    ssim = [value for _, value in measured]
    linf = np.abs(protected.astype(np.int16) - clean.astype(np.int16)).max() / 255
    return {"psnr": float(np.mean([psnr for psnr, _ in measured])),
            "ssim": None if None in ssim else float(np.mean(ssim)), "linf": float(linf),
            "linf_pixels": round(linf * 255)}


def add_victim_arguments(parser: argparse.ArgumentParser, victims: list[str]) -> None:
    """The victim flags of the evaluation scripts: which victims train, how, and with which seeds."""
    parser.add_argument("--victims", nargs="+", default=victims, help="timm model names, trained from scratch")
    parser.add_argument("--epochs", type=int, default=10, help="victim training epochs")
    parser.add_argument("--bf16_victims", nargs="+", default=[], metavar="NAME",
                        help="victims trained under bfloat16 autocast (test_resnet: about 2x faster on CPUs with "
                             "AVX512-BF16; MobileNetV3: slower)")
    parser.add_argument("--batch_size", type=int, default=128, help="victim training batch size")
    parser.add_argument("--learning_rate", type=float, default=0.05, help="victims' peak SGD learning rate")
    parser.add_argument("--seeds", "--seed", type=int, nargs="+", default=[0],
                        help="victim seeds: each victim trains once per seed (one seed's accuracy can differ from "
                             "another's by many points, so compare over several)")


def write_report(report: dict, output_json: Path | None) -> None:
    """Writes a script's JSON report to ``output_json`` (with its folders), unless that is None."""
    if output_json is not None:
        output_json.parent.mkdir(parents=True, exist_ok=True)
        output_json.write_text(json.dumps(report, indent=2))


def record_run(report: dict, result: VictimResult, seed: int, output_json: Path) -> None:
    """Adds a victim run to ``report["runs"]`` and rewrites the report file, so a stopped run keeps its results."""
    report["runs"].append({**result.to_dict(), "seed": seed})
    write_report(report, output_json)


def bf16_victims_error(bf16_victims: list[str], victims: list[str]) -> str | None:
    """What is wrong with ``--bf16_victims`` (names that are not among ``--victims``), or None."""
    unknown = set(bf16_victims) - set(victims)
    return f"--bf16_victims {' '.join(sorted(unknown))}: not among --victims ({' '.join(victims)})" if unknown else None


def train_victim(
    victim: str,
    setting: str,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    epochs: int = 10,
    batch_size: int = 128,
    learning_rate: float = 0.05,
    seed: int = 0,
    progress: bool = True,
    batch_transform: BatchTransform | None = None,
    bf16: bool = False,
    validation: tuple[torch.Tensor, torch.Tensor] | None = None,
    input_layer: torch.nn.Module | None = None,
) -> VictimResult:
    """Trains ``victim`` (a timm name) on uint8 NHWC ``train_images`` and tests it on clean ``test_images`` after
    each epoch; ``setting`` names the training data in the result and the progress bar.

    ``batch_transform``: a scraper's defense (Cutout, CutMix, Mixup, adversarial training: see ``defenses.py``),
    as in ``fitting.fit_batches``. ``bf16`` runs the training forward pass under bfloat16 autocast: on CPUs with
    AVX512-BF16 it halves test_resnet's time, but it slows depthwise models such as MobileNetV3, so it is a
    per-victim choice. Testing stays in float32. ``validation`` (uint8 NHWC images, labels), carved from the
    training rows, is what the per-epoch history measures instead of the test images, which are then used once.
    ``input_layer`` (a scraper's normalisation, such as per-image standardisation) goes before the model, for
    training and test images alike.
    """
    torch.manual_seed(seed)
    device = torch.device(default_device())
    model = create_classifier(victim, num_classes, train_images.shape[-1], train_images.shape[1])
    if input_layer is not None:
        model = torch.nn.Sequential(input_layer, model)
    model = model.to(device, memory_format=torch.channels_last)
    steps_per_epoch = -(-len(train_images) // batch_size)
    optimizer, schedule = make_optimizer(model, Optimization("sgd", learning_rate, warmup=0.25),
                                         epochs * steps_per_epoch)
    shuffle = torch.Generator().manual_seed(seed)
    monitor_images, monitor_labels = (test_images, test_labels) if validation is None else validation
    history: list[float] = []
    started = time.perf_counter()
    bar = tqdm(total=epochs * steps_per_epoch, desc=f"{victim} on {setting}", disable=not progress, leave=False)
    for _ in range(epochs):
        correct = fit_batches(model, optimizer, schedule, epoch_batches(len(train_images), batch_size, shuffle),
                              lambda indices: as_float(train_images[indices], device), train_labels, shuffle,
                              batch_transform, bf16, bar.update)
        predicted = logits(model, monitor_images).argmax(1)
        history.append((predicted == monitor_labels).sum().item() / len(monitor_labels))
        bar.set_postfix(train_acc=f"{correct / len(train_images):.3f}",
                        **{"test_acc" if validation is None else "validation_acc": f"{history[-1]:.3f}"})
    bar.close()
    if validation is not None:
        predicted = logits(model, test_images).argmax(1)
    test_acc = (predicted == test_labels).sum().item() / len(test_labels)
    return VictimResult(victim, setting, test_acc, max(history) if validation is None else None,
                        correct / len(train_images), time.perf_counter() - started, history, bf16,
                        balanced_accuracy(predicted, test_labels))


def as_dataset(images: torch.Tensor, labels: torch.Tensor, transform: Callable[[Image.Image], torch.Tensor]):
    """uint8 NHWC images and labels as a 🤗 ``Dataset`` of PIL images and labels, ``transform`` applied on access
    and the columns renamed to what a ``transformers`` model takes (``pixel_values``, ``labels``)."""
    from datasets import Dataset, Features, Value
    from datasets import Image as ImageFeature

    rows = {"image": [array_to_pil(image) for image in images.numpy()], "label": labels.tolist()}
    dataset = Dataset.from_dict(rows, features=Features({"image": ImageFeature(), "label": Value("int64")}))

    def prepare(batch: dict) -> dict:
        return {"pixel_values": [transform(image.convert("RGB")) for image in batch["image"]],
                "labels": batch["label"]}

    return dataset.with_transform(prepare)


def train_with_trainer(victim: str, train_images: torch.Tensor, train_labels: torch.Tensor,
                       test_images: torch.Tensor, test_labels: torch.Tensor, num_classes: int, epochs: int,
                       validation: tuple[torch.Tensor, torch.Tensor] | None, seed: int = 0,
                       crop_scale: float | None = None, learning_rate: float = TRAINER_LEARNING_RATE,
                       progress: bool = True
                       ) -> tuple[VictimResult, TransformersClassifier]:
    """Trains ``victim`` (a name of ``TRANSFORMERS_VICTIMS``) on uint8 NHWC RGB images at their own size the way
    the 🤗 image-classification guide does, from a config instead of a checkpoint: a ``Dataset`` of PIL images;
    ``with_transform`` applying torchvision's ``RandomResizedCrop`` (at least ``crop_scale`` of the area; None:
    torchvision's default, 0.08) and a flip, ``ToTensor`` and ``Normalize`` with the image processor's mean and
    std; ``DefaultDataCollator``; the ``Trainer`` (AdamW, linear decay after a 10 % warm-up, weight decay 0.05)
    evaluating on the ``validation`` images after each epoch. Returns the result on the clean test images after
    the last epoch and the trained classifier; ``train_acc`` is on the training images without augmentation.
    """
    from torchvision import transforms

    if validation is None:
        raise ValueError(f"{victim} trains with the Trainer, which needs validation images to evaluate each epoch: "
                         "give the benchmark validation_rows or validation_split")
    transformers = import_transformers()
    transformers.set_seed(seed)
    classifier = TransformersClassifier(victim, num_classes)
    normalize = transforms.Normalize(classifier.processor.image_mean, classifier.processor.image_std)
    scale = {} if crop_scale is None else {"scale": (crop_scale, 1.0)}  # {}: torchvision's default scale
    augment = transforms.Compose([transforms.RandomResizedCrop(train_images.shape[1], **scale),
                                  transforms.RandomHorizontalFlip(), transforms.ToTensor(), normalize])
    plain = transforms.Compose([transforms.ToTensor(), normalize])
    steps = epochs * -(-len(train_labels) // TRAINER_BATCH_SIZE)

    def accuracy(prediction) -> dict[str, float]:
        return {"accuracy": float((np.argmax(prediction.predictions, 1) == prediction.label_ids).mean())}

    with tempfile.TemporaryDirectory() as output_dir:
        arguments = transformers.TrainingArguments(
            output_dir=output_dir, num_train_epochs=epochs, learning_rate=learning_rate,
            per_device_train_batch_size=TRAINER_BATCH_SIZE, per_device_eval_batch_size=256,
            warmup_steps=-(-steps // 10), weight_decay=0.05, eval_strategy="epoch", save_strategy="no",
            logging_strategy="epoch", report_to="none", remove_unused_columns=False, seed=seed,
            dataloader_pin_memory=torch.cuda.is_available(), disable_tqdm=not progress)
        trainer = transformers.Trainer(
            model=classifier.model, args=arguments, data_collator=transformers.DefaultDataCollator(),
            train_dataset=as_dataset(train_images, train_labels, augment),
            eval_dataset=as_dataset(*validation, plain), compute_metrics=accuracy)
        if not progress:  # the Trainer prints each epoch's logs when its progress bar is off
            trainer.remove_callback(transformers.PrinterCallback)
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
    classifier.to(arguments.device)  # the Trainer moved the model (to a GPU if there is one), not the normalisation
    history = [entry["eval_accuracy"] for entry in trainer.state.log_history if "eval_accuracy" in entry]
    predicted = logits(classifier, test_images).argmax(1)
    train_acc = (logits(classifier, train_images).argmax(1) == train_labels).float().mean().item()
    return VictimResult(victim, "", (predicted == test_labels).float().mean().item(), None, train_acc, seconds,
                        history, False, balanced_accuracy(predicted, test_labels)), classifier
