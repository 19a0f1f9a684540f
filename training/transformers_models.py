"""🤗 ``transformers`` image classifiers as victims: the models a scraper of this ecosystem trains with the
``Trainer`` (``training.victim.train_with_trainer``), built from a config since nothing is downloaded here.

``TRANSFORMERS_VICTIMS`` names them: ``hf_convnext``, a small ConvNeXt (1.2 M parameters, depthwise 7×7
convolutions), of a family that none of the benchmark's surrogates (timm ResNets) belongs to.
"""

from __future__ import annotations

import torch
from torch import nn

# Victim name → (config class, image processor class, config settings; num_labels is set per dataset).
TRANSFORMERS_VICTIMS = {
    "hf_convnext": ("ConvNextConfig", "ConvNextImageProcessor", {"hidden_sizes": [32, 64, 128, 256],
                                                                 "depths": [1, 1, 3, 1]}),
}


def import_transformers():
    try:
        import transformers
    except ImportError as error:
        raise ImportError("the transformers victims need the transformers package: run `pip install transformers` "
                          "(or install this project's `train` extra)") from error
    return transformers


class TransformersClassifier(nn.Module):
    """A 🤗 image classifier called as the benchmark's victims are: images in [0, 1] (NCHW) → logits, normalised
    with its image processor's mean and std on the way in. ``model`` is what the ``Trainer`` trains."""

    def __init__(self, name: str, num_classes: int, channels: int = 3) -> None:
        super().__init__()
        if name not in TRANSFORMERS_VICTIMS:
            raise ValueError(f"unknown transformers victim {name!r}: choose one of {', '.join(TRANSFORMERS_VICTIMS)}")
        transformers = import_transformers()
        config_class, processor_class, settings = TRANSFORMERS_VICTIMS[name]
        config = getattr(transformers, config_class)(num_labels=num_classes, num_channels=channels, **settings)
        self.model = transformers.AutoModelForImageClassification.from_config(config)
        self.processor = getattr(transformers, processor_class)()
        self.register_buffer("mean", torch.tensor(self.processor.image_mean[:channels])[:, None, None])
        self.register_buffer("std", torch.tensor(self.processor.image_std[:channels])[:, None, None])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=(images - self.mean) / self.std).logits


def transformers_family(name: str) -> str:
    """A transformers victim's model type (``convnext``), which names its family as timm's module names do."""
    return getattr(import_transformers(), TRANSFORMERS_VICTIMS[name][0]).model_type
