"""What a data scraper can do against unlearnable examples: the victim-side defenses of ``training.benchmark``.

``build_defenses`` is the registry: each name maps to a ``Defense``, how a victim trains. A new defense is a
function below and one line there. Besides the scraper's defenses, the registry holds the benchmark's other
training conditions: protecting only part of the training set, and noise made with another surrogate.

Data-level, on uint8 NHWC image tensors before training:
- ``grayscale``: luma only, as three equal channels; many shortcuts live in colour. With JPEG at quality 10 it
  is the "image shortcut squeezing" of Liu et al., "Image Shortcut Squeezing: Countering Perturbative
  Availability Poisons with Compression", ICML 2023, which breaks many such noises.
- ``jpeg``: re-encode every image with PIL. Quality 10 is the squeezing defense; 75 is what photo sites and
  messengers commonly apply to uploads, so it is what a photo's protection meets before any scraper acts.
- ``downsize``: down to half the side (antialiased) and back up, training and test images alike: a scraper who
  trains at a lower resolution than the photos were protected at.

Model-level: ``Standardize``, per-image standardisation (each image's channels to zero mean and unit variance)
as the victim's first layer, so it applies to training and test images alike and removes any per-image colour
offset.

Batch-level, passed as ``train_victim(batch_transform=...)`` and applied after the victim's crop and flip.
Each takes ``(model, images, labels, generator)`` (NCHW float in [0, 1]; random draws come from
``generator``) and returns ``(images, targets)``, targets being class indices or class probabilities:
- ``cutout``: DeVries & Taylor, "Improved Regularization of Convolutional Neural Networks with Cutout", 2017.
- ``cutmix``: Yun et al., "CutMix: Regularization Strategy to Train Strong Classifiers with Localizable
  Features", ICCV 2019.
- ``mixup``: Zhang et al., "mixup: Beyond Empirical Risk Minimization", ICLR 2018.
- ``color_jitter``: brightness, contrast and saturation factors in [0.6, 1.4] and a hue shift of up to 0.1,
  drawn per image (kornia's ``ColorJitter``; torchvision's default jitter strength).
- ``trivial_augment``: torchvision's ``TrivialAugmentWide`` (Müller & Hutter, ICCV 2021), one random operation
  of random strength per image, the default recipe of timm and torchvision.
- ``resized_crop``: a random crop of a random share of the area and aspect ratio, resized back: torchvision's
  ``RandomResizedCrop``, the first step of the ImageNet recipes (kornia's, drawn per image). Not a defense of its
  own: a protocol can put it before every defense (``chain``), as the scrapers of photos do.
- ``adversarial_training``: PGD adversarial training (Madry et al., "Towards Deep Learning Models Resistant
  to Adversarial Attacks", ICLR 2018); a budget of half the poison's already undoes much unlearnable noise
  (Tao et al., "Better Safe Than Sorry: Preventing Delusive Adversaries with Adversarial Training",
  NeurIPS 2021).

CutMix and Mixup draw their mixing weight from Beta(1, 1), i.e. uniformly: the papers' CIFAR setting. Colour
jitter and TrivialAugment draw from torch's global generator, which ``train_victim`` seeds.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from kornia.augmentation import ColorJitter, RandomResizedCrop
from PIL import Image
from torch import nn
from torchvision.transforms.v2 import TrivialAugmentWide

from modeling_confounder.images import LUMA, array_to_pil, pil_to_array, to_float
from training.attacks import pgd
from training.augmentation import COLOR_JITTER


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC colour images as their ITU-R BT.601 luma, in every channel; gray ones as they are."""
    if images.shape[-1] == 1:
        return images
    luma = (images.float() @ torch.from_numpy(LUMA)).round().clamp(0, 255).to(torch.uint8)
    return luma[..., None].expand_as(images).contiguous()


def jpeg(images: torch.Tensor, quality: int = 10) -> torch.Tensor:
    """Every uint8 NHWC image encoded as a JPEG of ``quality`` with PIL and decoded again."""
    decoded = []
    for image in images.numpy():
        buffer = io.BytesIO()
        array_to_pil(image).save(buffer, format="JPEG", quality=quality)
        decoded.append(pil_to_array(Image.open(buffer)))
    return torch.from_numpy(np.stack(decoded))


def downsize(images: torch.Tensor) -> torch.Tensor:
    """Every uint8 NHWC image resized to half its side (antialiased) and back (bilinear): the detail a scraper
    training at half the resolution keeps."""
    size = images.shape[1:3]
    small = F.interpolate(to_float(images), scale_factor=0.5, mode="bilinear", antialias=True)
    restored = F.interpolate(small, size=size, mode="bilinear")
    return (restored * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


class Standardize(nn.Module):
    """Per-image standardisation: each channel of each image to zero mean and unit variance."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        mean = images.mean(dim=(2, 3), keepdim=True)
        return (images - mean) / images.std(dim=(2, 3), keepdim=True).clamp(min=1 / 255)


def color_jitter(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Brightness, contrast, saturation (±40 %) and hue (±0.1) jitter, drawn per image."""
    return ColorJitter(*COLOR_JITTER, p=1.0)(images), labels


def trivial_augment(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                    generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """TrivialAugmentWide on each image: one operation of the wide set at a random strength."""
    augment = TrivialAugmentWide()
    as_bytes = (images * 255).round().to(torch.uint8).cpu()
    return torch.stack([augment(image) for image in as_bytes]).to(images.device).float() / 255, labels


def resized_crop(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator,
                 scale: float = 0.35) -> tuple[torch.Tensor, torch.Tensor]:
    """A crop of ``scale``–100 % of each image's area, aspect ratio 3/4–4/3, resized back to the image's size."""
    return RandomResizedCrop(tuple(images.shape[-2:]), scale=(scale, 1.0), p=1.0)(images), labels


def chain(*transforms: Callable | None) -> Callable | None:
    """One batch transform that applies ``transforms`` in order (Nones left out); None when none is left."""
    chosen = [transform for transform in transforms if transform is not None]
    if len(chosen) <= 1:
        return chosen[0] if chosen else None

    def chained(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        for transform in chosen:
            images, labels = transform(model, images, labels, generator)
        return images, labels
    return chained


def random_boxes(count: int, size: int, sides: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Masks (count, 1, size, size) of squares of ``sides`` at uniform centres, clipped at the border."""
    centres = torch.randint(0, size, (count, 2), generator=generator)
    low = (centres - sides[:, None] // 2).clamp(min=0)
    high = (centres + (sides[:, None] + 1) // 2).clamp(max=size)
    coordinates = torch.arange(size)
    rows = (coordinates >= low[:, :1]) & (coordinates < high[:, :1])
    columns = (coordinates >= low[:, 1:]) & (coordinates < high[:, 1:])
    return (rows[:, :, None] & columns[:, None, :])[:, None]


def cutout(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
           generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Zeroes one square of half the image side per image (the paper's 16 px at 32×32)."""
    size = images.shape[-1]
    boxes = random_boxes(len(images), size, torch.full((len(images),), size // 2), generator)
    return images.masked_fill(boxes.to(images.device), 0), labels


def soft_targets(labels: torch.Tensor, order: torch.Tensor, weight: float, num_classes: int) -> torch.Tensor:
    """``weight`` of each image's own one-hot label plus the rest of its partner's (``labels[order]``)."""
    one_hot = F.one_hot(labels, num_classes).float()
    return weight * one_hot + (1 - weight) * one_hot[order.to(labels.device)]


def cutmix(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator,
           num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pastes one box from a partner image into each image; labels mix by the area that is kept."""
    order = torch.randperm(len(images), generator=generator)
    size = images.shape[-1]
    keep = torch.rand((), generator=generator).item()
    side = torch.tensor([round(size * (1 - keep) ** 0.5)])
    box = random_boxes(1, size, side, generator).to(images.device)
    mixed = torch.where(box, images[order.to(images.device)], images)
    kept = 1 - box.float().mean().item()  # the box may be clipped at the border
    return mixed, soft_targets(labels, order, kept, num_classes)


def mixup(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator,
          num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Blends each image with a partner image, and its label with the partner's, by one uniform weight."""
    order = torch.randperm(len(images), generator=generator)
    weight = torch.rand((), generator=generator).item()
    mixed = weight * images + (1 - weight) * images[order.to(images.device)]
    return mixed, soft_targets(labels, order, weight, num_classes)


def adversarial_training(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                         generator: torch.Generator, epsilon: float = 4 / 255,
                         steps: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Replaces the batch by PGD-``steps`` adversarial examples within ±``epsilon``, from a random start.

    The step size is 2.5·ε/steps (Madry et al.), so the attack can cross the ball from any start.
    """
    start = (torch.rand(images.shape, generator=generator) * 2 - 1).to(images.device) * epsilon
    start = (images + start).clamp(0, 1) - images
    noise = pgd(model, images, labels, epsilon, steps, 2.5 * epsilon / steps, maximize=True, noise=start)
    return images + noise, labels


@dataclass(frozen=True)
class Defense:
    """How a victim trains: a scraper's defense, or which part of the training set is protected."""

    data_transform: Callable[[torch.Tensor], torch.Tensor] | None = None  # on the uint8 NHWC training images
    on_test_images: bool = False  # the test images too: a model trained on gray images is tested on gray ones
    batch_transform: Callable | None = None  # see training.victim.train_victim
    input_layer: type[nn.Module] | None = None  # the victim's first layer, for training and test images
    cost: float = 1.0  # training time relative to no defense, for the time estimate
    protected_fraction: float = 1.0
    protected_class: int | None = None
    transfer: bool = False  # the method's noise comes from the transfer surrogate instead of its own

    @property
    def protects_part(self) -> bool:
        """Only part of the data is protected (a random fraction, or one class)."""
        return self.protected_fraction < 1 or self.protected_class is not None

    def training_set(self, clean: torch.Tensor, protected: torch.Tensor | None, labels: torch.Tensor,
                     seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The victim's training images and labels: protected where this defense protects (all, a random
        fraction, one class).

        ``protected=None`` (clean data) under partial protection keeps only the images that stay unprotected:
        the reference for partial protection is what a victim learns from the clean part alone, so that a
        protection that works leaves the victim no better than that (Huang et al., ICLR 2021, section 4.2).
        """
        if self.protected_class is not None:
            mask = labels == self.protected_class
        else:
            mask = torch.zeros(len(labels), dtype=torch.bool)
            chosen = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
            mask[chosen[:round(self.protected_fraction * len(labels))]] = True
        if protected is None:
            images, labels = (clean[~mask], labels[~mask]) if self.protects_part else (clean, labels)
        else:
            images = torch.where(mask[:, None, None, None], protected, clean)
        return (images if self.data_transform is None else self.data_transform(images)), labels


def build_defenses(num_classes: int, protected_class: int = 0, adversarial_epsilon: float = 4 / 255,
                   adversarial_steps: int = 3) -> dict[str, Defense]:
    """Every defense by name, in the benchmark's order (ε of adversarial training in [0, 1] units)."""
    adversarial = partial(adversarial_training, epsilon=adversarial_epsilon, steps=adversarial_steps)
    return {
        "none": Defense(),
        "grayscale": Defense(grayscale, on_test_images=True),
        **{f"jpeg{quality}": Defense(partial(jpeg, quality=quality)) for quality in (10, 50, 75)},
        "standardize": Defense(input_layer=Standardize),
        "color-jitter": Defense(batch_transform=color_jitter, cost=1.3),
        "trivial-augment": Defense(batch_transform=trivial_augment, cost=1.6),
        "downsize": Defense(downsize, on_test_images=True),
        "cutout": Defense(batch_transform=cutout),
        "cutmix": Defense(batch_transform=partial(cutmix, num_classes=num_classes)),
        "mixup": Defense(batch_transform=partial(mixup, num_classes=num_classes)),
        "adversarial": Defense(batch_transform=adversarial, cost=1 + adversarial_steps),
        **{f"partial{percent}": Defense(protected_fraction=percent / 100) for percent in (20, 50, 80)},
        "one-class": Defense(protected_class=protected_class),
        "transfer": Defense(transfer=True),
    }


DEFENSES = tuple(build_defenses(num_classes=2))  # the names
