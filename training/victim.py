"""Train a victim classifier from scratch, as a data scraper would, and measure it on clean test images.

Used by ``evaluate_unlearnability.py`` (and the benchmark). Standard augmentation: random crop with zero padding
of 1/8 of the side (4 px at 32×32) and horizontal flip; SGD with Nesterov momentum and a one-cycle schedule.
Tensor conventions: images are uint8 NHWC tensors until batched, then NCHW float in [0, 1].
"""

from __future__ import annotations

import platform
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from augmentation import crop_and_flip
from tqdm.auto import tqdm

from modeling_confounder.classifiers import create_classifier


@dataclass
class VictimResult:
    victim: str
    setting: str
    test_acc: float
    best_test_acc: float
    train_acc: float
    seconds: float
    history: list[float] = field(default_factory=list)
    bf16: bool = False

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
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"{torch.get_num_threads()} CPU threads"
    return f"{platform.machine()} {cpu_name()}, {device}, torch {torch.__version__}"


def as_float(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    return images.to(device).permute(0, 3, 1, 2).float().div_(255).contiguous(memory_format=torch.channels_last)


@torch.inference_mode()
def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = model(as_float(images[start:start + batch_size], device))
        correct += (logits.argmax(1).cpu() == labels[start:start + batch_size]).sum().item()
    return correct / len(images)


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
    batch_transform: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None,
    bf16: bool = False,
) -> VictimResult:
    """Trains ``victim`` (a timm name) on uint8 NHWC ``train_images`` and tests it on clean ``test_images``.

    ``batch_transform(model, images, labels, generator) -> (images, targets)`` lets a scraper's defense
    (Cutout, CutMix, Mixup, adversarial training: see ``defenses.py``) rewrite each augmented batch; targets
    are class indices or class probabilities, and train accuracy is still counted against the true labels.
    ``bf16`` runs the training forward pass under bfloat16 autocast: on CPUs with AVX512-BF16 it halves
    test_resnet's time, but it slows depthwise models such as MobileNetV3, so it is a per-victim choice.
    Testing stays in float32.
    """
    torch.manual_seed(seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = create_classifier(victim, num_classes, train_images.shape[-1], train_images.shape[1])
    model = model.to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate, momentum=0.9, nesterov=True,
                                weight_decay=5e-4)
    steps_per_epoch = -(-len(train_images) // batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, learning_rate, total_steps=epochs * steps_per_epoch,
                                                    pct_start=0.25)
    shuffle = torch.Generator().manual_seed(seed)
    history: list[float] = []
    started = time.perf_counter()
    bar = tqdm(total=epochs * steps_per_epoch, desc=f"{victim} on {setting}", disable=not progress, leave=False)
    for _ in range(epochs):
        model.train()
        correct = 0
        for indices in torch.randperm(len(train_images), generator=shuffle).split(batch_size):
            images = crop_and_flip(as_float(train_images[indices], device), shuffle)
            labels = train_labels[indices].to(device)
            targets = labels
            if batch_transform is not None:
                images, targets = batch_transform(model, images, labels, shuffle)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(images)
                loss = F.cross_entropy(logits, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            correct += (logits.argmax(1) == labels).sum().item()
            bar.update()
        history.append(accuracy(model, test_images, test_labels))
        bar.set_postfix(train_acc=f"{correct / len(train_images):.3f}", test_acc=f"{history[-1]:.3f}")
    bar.close()
    return VictimResult(victim, setting, history[-1], max(history), correct / len(train_images),
                        time.perf_counter() - started, history, bf16)
