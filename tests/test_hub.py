import json

import numpy as np
import pytest
import torch

from modeling_confounder import ConfounderDiscriminator, ConfounderGenerator

from .conftest import make_generator


def test_save_and_load_give_identical_outputs(tmp_path, rng):
    generator = make_generator(num_classes=5, epsilon=4 / 255)
    generator.save_pretrained(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    loaded = ConfounderGenerator.from_pretrained(tmp_path)
    for key in ("in_channels", "num_classes", "width", "num_blocks", "epsilon"):
        assert loaded.config[key] == generator.config[key]
    images = rng.integers(0, 256, (3, 20, 24, 3), dtype=np.uint8)
    np.testing.assert_array_equal(loaded.protect(images, labels=2), generator.protect(images, labels=2))


def test_discriminator_round_trip(tmp_path):
    torch.manual_seed(0)
    discriminator = ConfounderDiscriminator(width=4).eval()
    discriminator.save_pretrained(tmp_path)
    images = torch.rand(1, 3, 16, 16)
    torch.testing.assert_close(ConfounderDiscriminator.from_pretrained(tmp_path).eval()(images),
                               discriminator(images))


def test_missing_weights_are_explained(tmp_path):
    make_generator().save_pretrained(tmp_path)
    (tmp_path / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(OSError, match="must hold config.json and diffusion_pytorch_model.safetensors"):
        ConfounderGenerator.from_pretrained(tmp_path)


def test_mismatched_weights_are_explained(tmp_path):
    make_generator(width=8).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "width": 16}))
    with pytest.raises(OSError, match="weights that match the config"):
        ConfounderGenerator.from_pretrained(tmp_path)


def test_missing_folder_is_explained(tmp_path):
    with pytest.raises(OSError, match="could not load a ConfounderGenerator"):
        ConfounderGenerator.from_pretrained(tmp_path / "nowhere")
