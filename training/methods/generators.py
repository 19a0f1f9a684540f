"""ConfounderGAN's generators as methods: a shipped one (trained before the run) or one trained in the run."""

from __future__ import annotations

import shutil
from argparse import Namespace
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch

from modeling_confounder import CIFAR10_MODEL, ConfounderGenerator
from modeling_confounder.pipeline import is_keyed, protect
from training.data import ImageClassificationData
from training.gan import GeneratorTrainingConfig, train_generator
from training.models import weights_digest

from .base import Method, SurrogateWork, surrogate_stem
from .surrogates import CpuBudget


@dataclass
class ConfounderGAN(Method):
    """A ConfounderGAN generator (Tian et al., NeurIPS 2022): δ = G(x, y), or G(x) label-free. A keyed generator
    gives each class its own key, derived from a secret that the seed fixes and no training run has seen."""

    pretrained = True  # shipped weights: trained before the run, on other images

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
    on exactly the images given to ``fit``, fewer if the GAN steps reach the wall-clock share of
    ``budget_seconds`` CPU-seconds (``max_train_minutes``); the weights go to ``output_dir/generator-<digest>``.
    From scratch, or fine-tuned from ``model`` (a dataset owner adapting the shipped keyed generator to their
    images; it then protects with keys as ``ConfounderGAN`` does, and trains with fresh random keys, never them).
    """

    model: str | None = field(default=None, metadata={"hashed": False})  # hashed by content instead
    num_classes: int = 10
    surrogate: str = "test_resnet"
    steps: int = 300
    batch_size: int = 128
    use_labels: bool = True
    output_dir: Path = field(default=Path("runs/benchmark-cache"), metadata={"hashed": False})
    budget_seconds: float | None = None

    def __post_init__(self) -> None:
        surrogate_stem(self.surrogate)
        self.protector: ConfounderGAN | None = None

    @classmethod
    def from_options(cls, options: Namespace, num_classes: int, /, **fixed: object) -> Method:
        return super().from_options(options, num_classes, num_classes=num_classes, surrogate=options.surrogate,
                                    steps=options.confounder_steps, output_dir=options.cache_dir,
                                    budget_seconds=getattr(options, "method_budget", None), **fixed)

    @property
    def pretrained(self) -> bool:
        return self.model is not None

    @cached_property
    def model_weights(self) -> str | None:
        """The digest of the weights ``fit`` starts from (read once; the runner asks for the digest repeatedly)."""
        return None if self.model is None else weights_digest(ConfounderGenerator.from_pretrained(self.model))

    def settings(self) -> dict:
        weights = self.model_weights
        return super().settings() if weights is None else {**super().settings(), "model_weights": weights}

    def budget_wall_seconds(self) -> float | None:
        return None if self.budget_seconds is None else CpuBudget(self.budget_seconds).wall_limit

    def fit(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        output_dir = Path(self.output_dir) / f"generator-{self.digest()}"
        batch_size = min(self.batch_size, len(images))
        wall_seconds = self.budget_wall_seconds()
        config = GeneratorTrainingConfig(
            output_dir=output_dir, model=self.model, surrogates=(self.surrogate,), max_train_steps=self.steps,
            num_train_epochs=-(-self.steps // (len(images) // batch_size)), train_batch_size=batch_size,
            epsilon=self.epsilon * 255, seed=self.seed, checkpointing_steps=self.steps,
            max_train_minutes=None if wall_seconds is None else wall_seconds / 60)
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
        return SurrogateWork(*surrogate_stem(self.surrogate), 3 * self.steps * self.batch_size)
