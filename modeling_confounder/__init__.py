"""ConfounderGAN: imperceptible per-image noise that makes images unlearnable for classifiers.

Tian et al., "ConfounderGAN: Protecting Image Data Privacy with Causal Confounder", NeurIPS 2022 (arXiv 2212.01767).

    from modeling_confounder import DEFAULT_MODEL, ConfounderGenerator, protect
    generator = ConfounderGenerator.from_pretrained(DEFAULT_MODEL)
    protected = protect(generator, images, key="my secret")  # a uint8 NHWC array, a PIL image or a list of PIL images

🤗 Datasets support lives in ``modeling_confounder.hub_datasets`` (install the ``datasets`` extra).
"""

from pathlib import Path

from .discriminator import ConfounderDiscriminator
from .generator import ConfounderGenerator
from .image_files import (
    DEFAULT_MAX_PIXELS,
    LOSSY_FORMATS,
    OUTPUT_FORMATS,
    ImageJob,
    SourceImage,
    UnreadableImage,
    find_images,
    read_image,
    remove_stale_temporary_files,
    save_image,
)
from .images import array_to_pil, pil_to_array
from .keys import default_key_file, load_or_create_key, new_key
from .pipeline import default_device, is_keyed, protect
from .quality import image_quality

DEFAULT_MODEL = str(Path(__file__).parent / "keyed_model")
"""The keyed generator shipped inside the package (a local folder: no network needed): ``protect(generator,
images, key=...)`` protects any owner's photos, with any number of classes."""
CIFAR10_MODEL = str(Path(__file__).parent / "cifar10_model")
"""The CIFAR-10 label generator shipped inside the package: labels 0-9 (owner codes), or label-free through its
CIFAR-10 label predictor; for CIFAR-10-like data only."""

__all__ = [
    "CIFAR10_MODEL",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MODEL",
    "LOSSY_FORMATS",
    "OUTPUT_FORMATS",
    "ConfounderDiscriminator",
    "ConfounderGenerator",
    "ImageJob",
    "SourceImage",
    "UnreadableImage",
    "array_to_pil",
    "default_device",
    "default_key_file",
    "find_images",
    "image_quality",
    "is_keyed",
    "load_or_create_key",
    "new_key",
    "pil_to_array",
    "protect",
    "read_image",
    "remove_stale_temporary_files",
    "save_image",
]
__version__ = "0.1.0"
