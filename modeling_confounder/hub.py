"""The Hugging Face model interface shared by the generator and the discriminator.

diffusers' ``ModelMixin`` gives ``save_pretrained`` / ``from_pretrained`` / ``push_to_hub``; this base makes
loading strict and its errors say what is wrong, always as one ``OSError`` naming the folder or Hub id:

- weights are read from safetensors only, never from pickle (``.bin``, ``.pt``), which can run code when loaded;
- every weight must match the config: diffusers would only warn about missing or extra weights and leave the
  missing ones randomly initialised, which gives a model that silently protects nothing;
- a local folder is checked before diffusers reads it, so that a missing or invalid ``config.json``, pickle-only or
  corrupt weights and weights of another configuration each get a message that says which and what to do.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import torch
from diffusers.configuration_utils import ConfigMixin
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import CONFIG_NAME, SAFETENSORS_WEIGHTS_NAME
from safetensors import SafetensorError, safe_open

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def some(keys: Sequence[str], shown: int = 3) -> str:
    """The first few of many weight names, for a message that stays readable."""
    return ", ".join(keys[:shown]) + (f" (+{len(keys) - shown} more)" if len(keys) > shown else "")


def describe_mismatch(missing: Sequence[str], unexpected: Sequence[str], wrong_shapes: Sequence[str] = ()) -> str:
    parts = []
    if missing:
        parts.append(f"missing from the weights: {some(missing)}")
    if unexpected:
        parts.append(f"not in the model: {some(unexpected)}")
    if wrong_shapes:
        parts.append(f"wrong shape: {some(wrong_shapes, shown=1)}")
    return f"the weights do not match {CONFIG_NAME} ({'; '.join(parts)})"


class HubModel(ModelMixin, ConfigMixin):
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike,
                        **kwargs: Any) -> Self | tuple[Self, dict[str, Any]]:
        """Loads from a local folder written by ``save_pretrained`` or a Hub id; raises ``OSError`` saying what is
        wrong when the folder does not hold a ``config.json`` and matching safetensors weights."""
        if kwargs.get("use_safetensors") is False:
            raise ValueError(f"{cls.__name__} loads safetensors weights only: pickle weights can run code when loaded")
        kwargs["use_safetensors"] = True
        # These models are a few hundred KB: loading them the plain way needs no accelerate (a core install lacks it).
        kwargs.setdefault("low_cpu_mem_usage", False)
        output_loading_info = kwargs.pop("output_loading_info", False)
        source = str(pretrained_model_name_or_path)
        folder = Path(pretrained_model_name_or_path, kwargs.get("subfolder") or "")
        if folder.is_dir() and not kwargs.get("variant"):
            cls._check_folder(folder, source)
        elif not folder.exists() and (folder.is_absolute() or source.startswith((".", "~")) or source.count("/") > 1):
            # Not a Hub id ("org/name"): say so instead of diffusers' "could not connect to huggingface.co".
            raise cls._load_error(source, "no such folder")
        try:
            model, info = super().from_pretrained(pretrained_model_name_or_path, output_loading_info=True, **kwargs)
        except (OSError, ValueError, RuntimeError, TypeError) as error:
            raise cls._load_error(source, str(error)) from error
        # Checked here too for Hub ids, whose files _check_folder did not see.
        if info["missing_keys"] or info["unexpected_keys"]:
            problem = describe_mismatch(sorted(info["missing_keys"]), sorted(info["unexpected_keys"]))
            raise cls._load_error(source, problem)
        return (model, info) if output_loading_info else model

    @classmethod
    def _load_error(cls, source: str, problem: str) -> OSError:
        return OSError(
            f"could not load a {cls.__name__} from {source!r}: {problem}\n"
            f"A model folder (or Hub repo) must hold {CONFIG_NAME} and {SAFETENSORS_WEIGHTS_NAME} as written by "
            f"{cls.__name__}.save_pretrained(), with weights that match the config.")

    @classmethod
    def _check_folder(cls, folder: Path, source: str) -> None:
        """Raises ``OSError`` for what diffusers reports unclearly, or only warns about, in a local model folder."""
        config_path, weights_path = folder / CONFIG_NAME, folder / SAFETENSORS_WEIGHTS_NAME
        # The message names the folder already: files are named within it.
        config_name, weights_name = config_path.relative_to(source), weights_path.relative_to(source)
        if not config_path.is_file():
            raise cls._load_error(source, f"there is no {config_name}")
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise cls._load_error(source, f"{config_name} is not valid JSON ({error})") from None
        if not isinstance(config, dict):
            raise cls._load_error(source, f"{config_name} holds a JSON {type(config).__name__}, not an object")

        if not weights_path.is_file():
            pickles = sorted(path.name for path in folder.iterdir() if path.suffix in PICKLE_SUFFIXES)
            if pickles:
                raise cls._load_error(source, (
                    f"it holds pickle weights ({', '.join(pickles)}) but no {SAFETENSORS_WEIGHTS_NAME}; pickle "
                    "weights are refused, as loading them can run arbitrary code. If you trust the file, convert it "
                    "once with: python -c \"import torch; from safetensors.torch import save_file; "
                    f"save_file(torch.load('{folder / pickles[0]}', weights_only=True), '{weights_path}')\""))
            raise cls._load_error(source, f"there is no {weights_name}")
        try:
            # Reads only the header, which safetensors checks against the file's size: truncation shows here.
            with safe_open(weights_path, framework="pt") as file:
                shapes = {key: tuple(file.get_slice(key).get_shape()) for key in file.keys()}  # noqa: SIM118
        except (SafetensorError, OSError) as error:
            raise cls._load_error(source, f"{weights_name} is not a valid safetensors file, perhaps corrupt or "
                                          f"truncated ({error})") from None

        try:
            with torch.device("meta"):  # only the shapes are needed: nothing is allocated or initialised
                model = cls.from_config(config)
        except (TypeError, ValueError) as error:
            raise cls._load_error(source, f"{config_name} does not describe a valid {cls.__name__} ({error})") from None
        expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
        wrong_shapes = [f"{key} is {list(shapes[key])} in the weights but {list(expected[key])} in the config"
                        for key in sorted(shapes.keys() & expected.keys()) if shapes[key] != expected[key]]
        missing, unexpected = sorted(expected.keys() - shapes.keys()), sorted(shapes.keys() - expected.keys())
        if missing or unexpected or wrong_shapes:
            raise cls._load_error(source, describe_mismatch(missing, unexpected, wrong_shapes))
