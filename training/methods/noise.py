"""The methods that learn nothing: random noise, sample-wise or one pattern per class."""

from __future__ import annotations

from argparse import Namespace
from dataclasses import dataclass

import torch

from modeling_confounder.images import add_noise

from .base import Method


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
