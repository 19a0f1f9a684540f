"""The ConfounderGAN discriminator: tells clean images x from protected images x + δ.

Paper: Tian et al., "ConfounderGAN: Protecting Image Data Privacy with Causal Confounder", NeurIPS 2022. The
generator learns to fool it, which keeps the noise imperceptible beyond what the L∞ bound alone guarantees.

Tensor conventions: images are NCHW float in [0, 1]. The output is a map of patch logits (PatchGAN, Isola et al.,
2017): positive means "clean", one logit per overlapping patch, so any image size works.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import register_to_config
from torch import nn

from .hub import HubModel


class ConfounderDiscriminator(HubModel):
    """A small PatchGAN: strided 4x4 convolutions with spectral norm, then a 1-channel logit map.

    Args:
        in_channels: image channels (3 for RGB, 1 for grayscale).
        width: channels of the first layer; each downsampling doubles them.
        num_downsamples: stride-2 layers; each halves the resolution (2 suits 32x32 images).
    """

    @register_to_config
    def __init__(self, in_channels: int = 3, width: int = 32, num_downsamples: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for i in range(num_downsamples):
            out_channels = width * 2**i
            layers += [nn.utils.spectral_norm(nn.Conv2d(channels, out_channels, 4, stride=2, padding=1)),
                       nn.LeakyReLU(0.2, inplace=True)]
            channels = out_channels
        layers.append(nn.Conv2d(channels, 1, 3, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Patch logits of shape (N, 1, H / 2^num_downsamples, W / 2^num_downsamples)."""
        return self.layers(images * 2 - 1)
