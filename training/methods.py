"""Ways to make images unlearnable, all within the same L∞ budget ε (8/255): the methods of ``training.benchmark``.

A method protects uint8 NHWC image tensors and returns uint8 NHWC tensors that differ from them by at most
round(ε·255) levels per pixel. ``fit`` protects a training set, first learning whatever the method needs (a
surrogate classifier, a generator); ``perturb`` then protects new images with what ``fit`` learned.
``METHODS`` is the registry: a name maps to a class's ``from_options``, which reads the benchmark's options
(ε, seed, surrogate, budgets). A new method is one class and one line there.

- ``Clean``: no noise, the reference.
- ``UniformNoise``: sample-wise uniform noise in [-ε, ε], the control that should barely hurt
  (Huang et al., "Unlearnable Examples: Making Personal Data Unexploitable", ICLR 2021).
- ``ClasswiseNoise``: one uniform noise pattern per class (Huang et al., ICLR 2021).
- ``PatchNoise``: class-wise colour patches, tiled, in the style of the synthetic linearly separable
  perturbations of Yu et al., "Availability Attacks Create Shortcuts", KDD 2022.
- ``ErrorMinimizingNoise``: EM, sample-wise error-minimizing noise from a min-min bi-level optimisation
  (Huang et al., ICLR 2021).
- ``TargetedAdversarialPoison``: TAP, targeted PGD toward another class against a surrogate trained on clean
  data (Fowl et al., "Adversarial Examples Make Strong Poisons", NeurIPS 2021).
- ``ConfounderGAN`` / ``TrainedConfounderGAN``: the generator of this repo (Tian et al., "ConfounderGAN:
  Protecting Image Data Privacy with Causal Confounder", NeurIPS 2022, arXiv 2212.01767), shipped or trained
  by ``training.gan.train_generator``.

EM and TAP are cheap versions for 2 CPU cores: a strided surrogate (the timm model keeps its ImageNet stem and
works at a quarter of the resolution, about 7× faster for test_resnet) and few PGD steps. Their budgets are
fields, set by the benchmark's ``--options``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from argparse import Namespace
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from functools import cached_property, partial
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from modeling_confounder import CIFAR10_MODEL, DEFAULT_MODEL, ConfounderGenerator
from modeling_confounder.images import add_noise
from modeling_confounder.pipeline import default_device, is_keyed, protect
from training.attacks import pgd
from training.data import ImageClassificationData
from training.fitting import Optimization, fit_batches, make_optimizer, random_batches
from training.gan import GeneratorTrainingConfig, train_generator
from training.models import create_classifier, weights_digest
from training.victim import as_float


def device() -> torch.device:
    return torch.device(default_device())


def surrogate_classifier(name: str, num_classes: int, channels: int, resolution: int) -> nn.Module:
    """A timm model with its ImageNet stem (strided): cheap at CIFAR size, and its noise still transfers."""
    return create_classifier(name, num_classes, channels, resolution, small_input_stem=False).to(device())


def pgd_step_size(epsilon_levels: float, steps: int) -> float:
    """2.5·ε/steps: PGD can cross the ε-ball within one call (Madry et al., ICLR 2018)."""
    return 2.5 * (epsilon_levels / 255) / steps


class SurrogateWork(NamedTuple):
    """What ``fit`` costs at most: forward+backward image passes through a timm model (for time estimates)."""

    model: str
    small_input_stem: bool | None
    passes: float


@dataclass
class Method:
    """Base: the fields are the settings that determine the output; ``settings()`` is what cache keys hash."""

    epsilon: float = 8 / 255
    seed: int = 0

    def fit(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Protects a training set (uint8 NHWC); methods that learn something learn it here."""
        return self.perturb(images, labels)

    def perturb(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Protects new uint8 NHWC images with what ``fit`` learned."""
        raise NotImplementedError

    def settings(self) -> dict:
        hashed = {item.name: getattr(self, item.name) for item in fields(self)
                  if item.metadata.get("hashed", True)}
        return {"method": type(self).__name__, **hashed}

    def digest(self) -> str:
        settings = json.dumps(self.settings(), sort_keys=True, default=str)
        return hashlib.sha256(settings.encode()).hexdigest()[:16]

    def work(self, num_images: int) -> SurrogateWork | None:
        """The surrogate work of ``fit`` on ``num_images`` images; None when it trains nothing."""
        return None

    @classmethod
    def from_options(cls, options: Namespace, num_classes: int, /, **fixed: object) -> Method:
        """The method as the benchmark's options set it (``options.epsilon`` in levels out of 255)."""
        return cls(epsilon=options.epsilon / 255, seed=options.seed, **fixed)


@dataclass
class Clean(Method):
    def perturb(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return images


@dataclass
class UniformNoise(Method):
    """Sample-wise i.i.d. uniform noise in [-ε, ε]: no shortcut to learn, so it should barely hurt victims."""

    def perturb(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed)
        noise = (torch.rand(images.permute(0, 3, 1, 2).shape, generator=generator) * 2 - 1) * self.epsilon
        return add_noise(images, noise, self.epsilon)


@dataclass
class ClasswiseNoise(Method):
    """One uniform [-ε, ε] pattern per class, the same for all its images (Huang et al., ICLR 2021)."""

    num_classes: int = 10

    @classmethod
    def from_options(cls, options: Namespace, num_classes: int, /, **fixed: object) -> Method:
        return super().from_options(options, num_classes, num_classes=num_classes, **fixed)

    def patterns(self, channels: int, height: int, width: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed)
        uniform = torch.rand(self.num_classes, channels, height, width, generator=generator)
        return (uniform * 2 - 1) * self.epsilon

    def perturb(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        _, height, width, channels = images.shape
        return add_noise(images, self.patterns(channels, height, width)[labels], self.epsilon)


@dataclass
class PatchNoise(ClasswiseNoise):
    """Class-wise grids of ``patch_size``² colour patches, each channel of each patch offset by ±ε.

    In the style of the synthetic noise of Yu et al. (KDD 2022): a few random colours per class, upsampled to
    patches and tiled, are linearly separable. A patch is larger than the victim's crop shift (1/8 of the
    side), so most of the pattern survives crop and flip. Signs (not uniform values) use the whole budget.
    """

    patch_size: int = 8

    def patterns(self, channels: int, height: int, width: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed)
        cells = (self.num_classes, channels, -(-height // self.patch_size), -(-width // self.patch_size))
        signs = torch.randint(0, 2, cells, generator=generator).float() * 2 - 1
        tiled = signs.repeat_interleave(self.patch_size, 2).repeat_interleave(self.patch_size, 3)
        return tiled[..., :height, :width] * self.epsilon


@dataclass
class SurrogateMethod(Method):
    """A method that optimises noise against a surrogate classifier (see ``surrogate_classifier``)."""

    num_classes: int = 10
    surrogate: str = "test_resnet"
    steps: int = 10
    step_size: float = 2 / 255
    batch_size: int = 256
    learning_rate: float = 0.1

    def __post_init__(self) -> None:
        self.model: nn.Module | None = None

    @classmethod
    def from_options(cls, options: Namespace, num_classes: int, /, **fixed: object) -> Method:
        return super().from_options(options, num_classes, num_classes=num_classes, surrogate=options.surrogate,
                                    **fixed)

    def new_surrogate(self, images: torch.Tensor, warmup: float | None = None, total_steps: int = 0
                      ) -> tuple[nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
        """A fresh surrogate for float NCHW ``images``, its SGD optimizer and (with ``warmup``) a one-cycle
        schedule over ``total_steps``."""
        torch.manual_seed(self.seed)
        model = surrogate_classifier(self.surrogate, self.num_classes, images.shape[1], images.shape[-1])
        optimization = Optimization(learning_rate=self.learning_rate, warmup=warmup, nesterov=False)
        return model, *make_optimizer(model, optimization, total_steps)

    def train_surrogate(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                        schedule: torch.optim.lr_scheduler.LRScheduler | None, images: torch.Tensor,
                        labels: torch.Tensor, steps: int, generator: torch.Generator) -> None:
        """``steps`` steps on random batches of float NCHW ``images``, with the victims' crop and flip."""
        batches = random_batches(len(images), self.batch_size, steps, generator)
        fit_batches(model, optimizer, schedule, batches, images.__getitem__, labels, generator)

    def fitted_model(self) -> nn.Module:
        if self.model is None:
            raise RuntimeError(f"{type(self).__name__}.perturb needs a surrogate: "
                               "call fit(images, labels) first")
        return self.model


@dataclass
class ErrorMinimizingNoise(SurrogateMethod):
    """EM: sample-wise noise that makes each image *easy*, so that a victim has nothing left to learn.

    Huang et al., ICLR 2021: the min-min bi-level problem min_θ Σ min_δ L(f_θ(x + δ), y), solved by
    alternating ``train_steps`` surrogate SGD steps on the perturbed data and ``steps`` PGD steps that lower
    each image's loss, until the surrogate fits the perturbed training set (accuracy > ``stop_accuracy``) or
    for ``rounds``. The paper uses 10 train steps, 20 PGD steps of ε/10 and a ResNet-18; we use fewer, larger
    steps on a strided surrogate so that it runs on 2 CPU cores.
    """

    rounds: int = 10
    train_steps: int = 10
    stop_accuracy: float = 0.99

    @classmethod
    def from_options(cls, options: Namespace, num_classes: int, /, **fixed: object) -> Method:
        return super().from_options(options, num_classes, rounds=options.em_rounds,
                                    train_steps=options.em_train_steps, steps=options.em_steps,
                                    step_size=pgd_step_size(options.epsilon, options.em_steps), **fixed)

    def fit(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        clean = as_float(images, device())
        labels = labels.to(clean.device)
        noise = torch.zeros_like(clean)
        model, optimizer, _ = self.new_surrogate(clean)
        generator = torch.Generator().manual_seed(self.seed)
        for round_index in range(self.rounds):
            self.train_surrogate(model, optimizer, None, (clean + noise).clamp(0, 1), labels, self.train_steps,
                                 generator)
            model.eval()
            correct = 0
            for batch in torch.arange(len(clean)).split(self.batch_size):
                noise[batch] = pgd(model, clean[batch], labels[batch], self.epsilon, self.steps,
                                   self.step_size, maximize=False, noise=noise[batch])
                with torch.no_grad():
                    correct += (model(clean[batch] + noise[batch]).argmax(1) == labels[batch]).sum().item()
            accuracy = correct / len(clean)
            print(f"EM round {round_index + 1}/{self.rounds}: surrogate accuracy on the perturbed data "
                  f"{accuracy:.1%}", flush=True)
            if accuracy > self.stop_accuracy:
                break
        self.model = model
        return add_noise(images, noise, self.epsilon)

    def perturb(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """New images: error-minimizing PGD against the final surrogate."""
        model = self.fitted_model().eval()
        clean = as_float(images, device())
        noise = pgd(model, clean, labels.to(clean.device), self.epsilon, self.steps, self.step_size,
                    maximize=False)
        return add_noise(images, noise, self.epsilon)

    def work(self, num_images: int) -> SurrogateWork:
        passes = self.rounds * (self.train_steps * self.batch_size + num_images * (self.steps + 1))
        return SurrogateWork(self.surrogate, False, passes)


@dataclass
class TargetedAdversarialPoison(SurrogateMethod):
    """TAP: targeted adversarial noise toward class (y + 1) mod K, against a surrogate trained on clean data.

    Fowl et al., NeurIPS 2021: the noise carries features of a wrong class, which the victim learns as if they
    were the true one's. The paper attacks a well-trained ResNet-18 with 250 PGD steps and differentiable
    augmentation; here a strided surrogate trained for ``surrogate_epochs`` and ``steps`` PGD steps, so expect
    a weaker poison.
    """

    surrogate_epochs: int = 5

    @classmethod
    def from_options(cls, options: Namespace, num_classes: int, /, **fixed: object) -> Method:
        return super().from_options(options, num_classes, surrogate_epochs=options.tap_epochs,
                                    steps=options.tap_steps,
                                    step_size=pgd_step_size(options.epsilon, options.tap_steps), **fixed)

    def fit(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        clean = as_float(images, device())
        steps = max(1, self.surrogate_epochs * len(clean) // self.batch_size)
        model, optimizer, schedule = self.new_surrogate(clean, warmup=0.3, total_steps=steps)
        self.train_surrogate(model, optimizer, schedule, clean, labels.to(clean.device), steps,
                             torch.Generator().manual_seed(self.seed))
        self.model = model
        return self.perturb(images, labels)

    def perturb(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        model = self.fitted_model().eval()
        protected = []
        for batch in torch.arange(len(images)).split(self.batch_size):
            clean = as_float(images[batch], device())
            targets = (labels[batch].to(clean.device) + 1) % self.num_classes
            noise = pgd(model, clean, targets, self.epsilon, self.steps, self.step_size, maximize=False)
            protected.append(add_noise(images[batch], noise, self.epsilon))
        return torch.cat(protected)

    def work(self, num_images: int) -> SurrogateWork:
        return SurrogateWork(self.surrogate, False, num_images * (self.surrogate_epochs + self.steps))


@dataclass
class ConfounderGAN(Method):
    """A ConfounderGAN generator (Tian et al., NeurIPS 2022): δ = G(x, y), or G(x) label-free. A keyed generator
    gives each class its own key, derived from a secret that the seed fixes and no training run has seen."""

    model: str = field(default=CIFAR10_MODEL, metadata={"hashed": False})  # hashed by content instead
    use_labels: bool = True

    @classmethod
    def from_options(cls, options: Namespace, num_classes: int, /, **fixed: object) -> Method:
        return super().from_options(options, num_classes, **{"model": options.model, **fixed})

    def settings(self) -> dict:
        config = {key: value for key, value in self.generator.config.items() if not key.startswith("_")}
        return {**super().settings(), "model_weights": weights_digest(self.generator), "model_config": config}

    @cached_property
    def generator(self) -> ConfounderGenerator:
        return ConfounderGenerator.from_pretrained(self.model)

    def perturb(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        given = labels.tolist() if self.use_labels else None
        key = f"benchmark secret {self.seed}" if is_keyed(self.generator) else None
        return torch.from_numpy(protect(self.generator, images.numpy(), labels=given, key=key, epsilon=self.epsilon))


@dataclass
class TrainedConfounderGAN(Method):
    """ConfounderGAN with a generator trained inside the benchmark run by ``training.gan.train_generator``.

    ``steps`` training steps with ``surrogate`` (a timm name, at full resolution as ``training.gan`` builds it)
    on exactly the images given to ``fit``; the weights go to ``output_dir/generator-<digest>``.
    """

    num_classes: int = 10
    surrogate: str = "test_resnet"
    steps: int = 300
    batch_size: int = 128
    use_labels: bool = True
    output_dir: Path = field(default=Path("runs/benchmark-cache"), metadata={"hashed": False})

    def __post_init__(self) -> None:
        self.protector: ConfounderGAN | None = None

    @classmethod
    def from_options(cls, options: Namespace, num_classes: int, /, **fixed: object) -> Method:
        return super().from_options(options, num_classes, num_classes=num_classes, surrogate=options.surrogate,
                                    steps=options.confounder_steps, output_dir=options.cache_dir, **fixed)

    def fit(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        output_dir = Path(self.output_dir) / f"generator-{self.digest()}"
        batch_size = min(self.batch_size, len(images))
        config = GeneratorTrainingConfig(
            output_dir=output_dir, surrogates=(self.surrogate,), max_train_steps=self.steps,
            num_train_epochs=-(-self.steps // (len(images) // batch_size)), train_batch_size=batch_size,
            epsilon=self.epsilon * 255, seed=self.seed, checkpointing_steps=self.steps)
        train_generator(config, ImageClassificationData(images, labels, self.num_classes))
        # The training state is only for resuming, which the benchmark never does; the weights stay.
        for checkpoint in output_dir.glob("checkpoint-*"):
            shutil.rmtree(checkpoint)
        self.protector = ConfounderGAN(self.epsilon, self.seed, str(output_dir), self.use_labels)
        return self.protector.perturb(images, labels)

    def perturb(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.protector is None:
            raise RuntimeError("TrainedConfounderGAN.perturb needs a generator: call fit(images, labels) "
                               "first")
        return self.protector.perturb(images, labels)

    def work(self, num_images: int) -> SurrogateWork:
        # Per step the surrogate trains on a batch and the generator backpropagates through it; the generator,
        # discriminator and noise head together cost about one more pass.
        return SurrogateWork(self.surrogate, None, 3 * self.steps * self.batch_size)


# The registry: name -> (options, num_classes) -> Method.
METHODS: dict[str, Callable[[Namespace, int], Method]] = {
    "clean": Clean.from_options,
    "random": UniformNoise.from_options,
    "classwise": ClasswiseNoise.from_options,
    "patch": PatchNoise.from_options,
    "em": ErrorMinimizingNoise.from_options,
    "tap": TargetedAdversarialPoison.from_options,
    "confounder": ConfounderGAN.from_options,
    "confounder-label-free": partial(ConfounderGAN.from_options, use_labels=False),
    "confounder-keyed": partial(ConfounderGAN.from_options, model=DEFAULT_MODEL),
    "confounder-trained": TrainedConfounderGAN.from_options,
}
TRANSFERABLE = ("em", "tap", "confounder-trained")  # the methods with a surrogate to swap


def create_method(name: str, options: Namespace, num_classes: int) -> Method:
    """The method registered as ``name``, set by the benchmark's ``options``."""
    return METHODS[name](options, num_classes)
