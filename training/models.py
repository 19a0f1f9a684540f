"""The networks of training besides the generator and discriminator (which live in ``modeling_confounder``).

- ``create_classifier``: timm classifiers trained from scratch: the surrogates f of ConfounderGAN training, the
  label predictor's peers and the victims of evaluation. At small resolutions (CIFAR's 32×32, MedMNIST's 28×28)
  ImageNet stems throw away most pixels in their first layers, so the first strided convolution gets stride 1 and
  the first max-pool is removed, as in CIFAR ResNets. The names of ``pretrained.PRETRAINED_VICTIMS`` give the
  ImageNet-pretrained victims instead, those of ``transformers_models.TRANSFORMERS_VICTIMS`` 🤗 transformers
  models.
- ``noise_head``: h, the small CNN that reads the label off the noise δ / ε alone.
- ``KeyReader``: f or h for a keyed generator: which of this batch's keys made this input.
- ``weights_digest``: a short hash of a model's tensors, stored in reports to tell weights apart.
- ``architecture``: a timm model's family and whether it is depthwise, for labelling victims white-box or held out.
"""

from __future__ import annotations

import hashlib

import timm
import torch
import torch.nn.functional as F
from torch import nn

from .pretrained import BACKBONE, PRETRAINED_VICTIMS, PretrainedVictim
from .transformers_models import TRANSFORMERS_VICTIMS, TransformersClassifier, transformers_family

KEY_EMBEDDING = 64  # dimensions a KeyReader compares inputs and keys in
KEY_TEMPERATURE = 10.0  # cosine similarities are scaled by this before the softmax


def create_classifier(name: str, num_classes: int, in_channels: int = 3, resolution: int = 32,
                      small_input_stem: bool | None = None) -> nn.Module:
    """A randomly initialised timm model (never downloads weights) whose stem suits ``resolution``, a
    ``PretrainedVictim`` for a name of ``PRETRAINED_VICTIMS`` (RGB only; it resizes its inputs itself), or a
    ``TransformersClassifier`` for a name of ``TRANSFORMERS_VICTIMS`` (randomly initialised, its own stem).

    ``small_input_stem``: True keeps the full resolution in the stem, False keeps timm's ImageNet stem, None
    chooses True at 64 px or less (never for ViT/DeiT, which take ``img_size`` instead).
    """
    if name in PRETRAINED_VICTIMS:
        if in_channels != 3:
            raise ValueError(f"{name} is pretrained on RGB images; this data has {in_channels} channel(s)")
        return PretrainedVictim(num_classes, frozen=PRETRAINED_VICTIMS[name])
    if name in TRANSFORMERS_VICTIMS:
        return TransformersClassifier(name, num_classes, in_channels)
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


def noise_head(in_channels: int, num_classes: int) -> nn.Module:
    """h: predicts the label from δ / ε alone. Small on purpose: the label must be easy to read off the noise."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes))


class KeyReader(nn.Module):
    """Answers "which of this batch's keys made this input": ``embedder`` maps the input and a linear map each key
    code to ``KEY_EMBEDDING`` dimensions; the logits are their cosine similarities × ``KEY_TEMPERATURE``, one
    column per key. Keys are drawn fresh in every batch, so it must read any key, not remember ten."""

    def __init__(self, embedder: nn.Module, key_dim: int) -> None:
        super().__init__()
        self.embedder = embedder
        self.key_projection = nn.Linear(key_dim, KEY_EMBEDDING)

    def forward(self, inputs: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        embedded = F.normalize(self.embedder(inputs), dim=1)
        return embedded @ F.normalize(self.key_projection(keys.to(embedded.dtype)), dim=1).T * KEY_TEMPERATURE


def weights_digest(model: nn.Module) -> str:
    """The first 12 hex digits of a SHA-256 over a model's tensors: tells apart two weights that share a name
    (a folder or Hub id can hold other weights tomorrow)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:12]


def architecture(name: str) -> dict[str, str | bool]:
    """A victim's family (the timm module that defines it: ``resnet`` for test_resnet and ResNet-18; a transformers
    model's type) and whether it has depthwise convolutions (MobileNets, EfficientNets, ConvNeXts), which resist
    some unlearnable noises."""
    if name in TRANSFORMERS_VICTIMS:
        family, model = transformers_family(name), create_classifier(name, 10)
    else:
        timm_name = BACKBONE if name in PRETRAINED_VICTIMS else name
        family = timm.models.model_entrypoint(timm_name).__module__.rsplit(".", 1)[-1]
        model = create_classifier(timm_name, 10)
    convolutions = [module for module in model.modules() if isinstance(module, nn.Conv2d)]
    depthwise = any(conv.groups > 1 and conv.groups == conv.in_channels for conv in convolutions)
    return {"family": family, "depthwise": depthwise}

