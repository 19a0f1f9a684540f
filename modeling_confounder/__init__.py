"""ConfounderGAN: imperceptible per-image noise that makes images unlearnable for classifiers.

Tian et al., "ConfounderGAN: Protecting Image Data Privacy with Causal Confounder", NeurIPS 2022.

    from modeling_confounder import ConfounderGenerator, DEFAULT_MODEL
    generator = ConfounderGenerator.from_pretrained(DEFAULT_MODEL)
    protected = generator.protect(images)
"""

from pathlib import Path

from .discriminator import ConfounderDiscriminator
from .generator import ConfounderGenerator

DEFAULT_MODEL = str(Path(__file__).parent / "default_model")
"""The generator weights shipped inside the package (a local folder: no network needed)."""

__all__ = ["DEFAULT_MODEL", "ConfounderDiscriminator", "ConfounderGenerator"]
__version__ = "0.1.0"
