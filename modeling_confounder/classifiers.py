"""timm classifiers trained from scratch: the surrogate f of ConfounderGAN training and the victims of evaluation.

At small resolutions (CIFAR's 32×32, MedMNIST's 28×28) ImageNet stems throw away most pixels in their first
layers, so ``create_classifier`` adapts them the way CIFAR ResNets do: the first strided convolution gets stride 1
and the first max-pool is removed, so ResNet-style models keep full resolution in their first stage.
"""

from __future__ import annotations

import timm
from torch import nn


def create_classifier(name: str, num_classes: int, in_channels: int = 3, resolution: int = 32,
                      small_input_stem: bool | None = None) -> nn.Module:
    """A randomly initialised timm model (never downloads weights) whose stem suits ``resolution``."""
    kwargs = {"img_size": resolution} if "vit" in name or "deit" in name else {}
    try:
        model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels, **kwargs)
    except RuntimeError as error:
        raise ValueError(f"unknown timm model {name!r}: {error}") from None
    if small_input_stem if small_input_stem is not None else resolution <= 64 and not kwargs:
        first_conv = next(module for module in model.modules() if isinstance(module, nn.Conv2d))
        first_conv.stride = (1, 1)
        for parent in model.modules():
            for child_name, child in parent.named_children():
                if isinstance(child, nn.MaxPool2d):
                    setattr(parent, child_name, nn.Identity())
                    return model
    return model
