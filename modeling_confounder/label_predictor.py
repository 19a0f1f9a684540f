"""The label predictor of the label-free path: which class should an unlabeled image's confounder encode?

ConfounderGAN (Tian et al., NeurIPS 2022) protects new, unlabeled images with one forward pass. Its noise only
works as a confounder when it predicts the image's true label, so without a label the generator needs a guess:
this small CNN classifies a thumbnail of the whole image (``resolution``², so tiles of a large photo share one
guess and the cost does not grow with the photo), and the generator then adds the noise of the predicted class.
A victim's clean test accuracy under label-free protection is bounded by how often this guess is right.

Tensor conventions: images are NCHW float in [0, 1]; the output is (N, num_classes) logits.

In eval mode each batch norm is folded into the convolution before it: the same arithmetic, done once on the
weights instead of on every activation, which makes the predictor faster on CPUs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(in_channels: int, out_channels: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


class LabelPredictor(nn.Module):
    """Four 3×3 conv-BN-ReLU stages (width, 2·width, 4·width, 8·width; the last three stride 2), then a linear
    classifier on the global average."""

    def __init__(self, in_channels: int, num_classes: int, width: int, resolution: int) -> None:
        super().__init__()
        self.resolution = resolution
        self.features = nn.Sequential(
            *conv_bn_relu(in_channels, width, 1), *conv_bn_relu(width, 2 * width, 2),
            *conv_bn_relu(2 * width, 4 * width, 2), *conv_bn_relu(4 * width, 8 * width, 2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(8 * width, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-2:] != (self.resolution, self.resolution):
            images = F.interpolate(images, size=(self.resolution, self.resolution), mode="bilinear",
                                   antialias=True, align_corners=False)
        features = self.features(images * 2 - 1) if self.training else self.folded_features(images * 2 - 1)
        return self.classifier(features)

    def folded_features(self, features: torch.Tensor) -> torch.Tensor:
        """``self.features`` in eval mode, with each batch norm's affine map folded into the convolution before it."""
        layers = iter(self.features)
        for layer in layers:
            if isinstance(layer, nn.Conv2d):
                norm = next(layers)
                scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)
                bias = norm.bias - norm.running_mean * scale
                features = F.conv2d(features, layer.weight * scale[:, None, None, None], bias, layer.stride,
                                    layer.padding)
            else:
                features = layer(features)
        return features
