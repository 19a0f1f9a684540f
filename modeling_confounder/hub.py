"""The Hugging Face model interface shared by the generator and the discriminator.

diffusers' ``ModelMixin`` gives ``save_pretrained`` / ``from_pretrained`` / ``push_to_hub``; this base only makes
loading strict (safetensors, never pickle) and its errors say what a weights folder must hold.
"""

from __future__ import annotations

import os
from typing import Any

from diffusers.configuration_utils import ConfigMixin
from diffusers.models.modeling_utils import ModelMixin


class HubModel(ModelMixin, ConfigMixin):
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any):
        """Loads from a local folder written by ``save_pretrained`` or a Hub id (safetensors weights only)."""
        kwargs.setdefault("use_safetensors", True)
        try:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except (OSError, ValueError, RuntimeError) as error:
            raise OSError(
                f"could not load a {cls.__name__} from {str(pretrained_model_name_or_path)!r}: {error}\n"
                "A model folder (or Hub repo) must hold config.json and diffusion_pytorch_model.safetensors as "
                f"written by {cls.__name__}.save_pretrained(), with weights that match the config."
            ) from error
