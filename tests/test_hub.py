import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from modeling_confounder import ConfounderDiscriminator, ConfounderGenerator, protect

from .conftest import make_generator


def test_save_and_load_give_identical_outputs(tmp_path, rng):
    generator = make_generator(num_classes=5, epsilon=4 / 255)
    generator.save_pretrained(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    loaded = ConfounderGenerator.from_pretrained(tmp_path)
    for key in ("in_channels", "num_classes", "width", "num_blocks", "epsilon"):
        assert loaded.config[key] == generator.config[key]
    images = rng.integers(0, 256, (3, 20, 24, 3), dtype=np.uint8)
    np.testing.assert_array_equal(protect(loaded, images, labels=2), protect(generator, images, labels=2))


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


WEIGHTS, CONFIG = "diffusion_pytorch_model.safetensors", "config.json"


def edit_config(folder, **changes):
    config = json.loads((folder / CONFIG).read_text())
    (folder / CONFIG).write_text(json.dumps({**config, **changes}))


def edit_weights(folder, change):
    weights = load_file(folder / WEIGHTS)
    change(weights)
    save_file(weights, folder / WEIGHTS, metadata={"format": "pt"})


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def pickle_only(folder, name):
    torch.save(load_file(folder / WEIGHTS), folder / name)
    (folder / WEIGHTS).unlink()


@pytest.mark.parametrize("damage, problem", [
    pytest.param(lambda folder: truncate(folder / WEIGHTS),
                 f"{WEIGHTS} is not a valid safetensors file, perhaps corrupt or truncated", id="truncated-weights"),
    pytest.param(lambda folder: (folder / WEIGHTS).write_bytes(b"\x00" * 64),
                 f"{WEIGHTS} is not a valid safetensors file, perhaps corrupt or truncated", id="garbage-weights"),
    pytest.param(lambda folder: (folder / CONFIG).unlink(), f"there is no {CONFIG}", id="missing-config"),
    pytest.param(lambda folder: (folder / CONFIG).write_text('{"width": 8,'), f"{CONFIG} is not valid JSON (",
                 id="config-not-json"),
    pytest.param(lambda folder: (folder / CONFIG).write_text("[8]"), f"{CONFIG} holds a JSON list, not an object",
                 id="config-a-list"),
    pytest.param(lambda folder: edit_config(folder, epsilon=2),
                 f"{CONFIG} does not describe a valid ConfounderGenerator (epsilon must be in (0, 1]",
                 id="invalid-config-value"),
    pytest.param(lambda folder: edit_config(folder, width=48),
                 f"the weights do not match {CONFIG} (wrong shape: blocks.0.conv1.bias is [8] in the weights but "
                 "[48] in the config (+", id="config-width-48-weights-width-8"),
    pytest.param(lambda folder: edit_weights(folder, lambda weights: weights.pop("stem.weight")),
                 f"the weights do not match {CONFIG} (missing from the weights: stem.weight)", id="missing-key"),
    pytest.param(lambda folder: edit_weights(folder, lambda weights: weights.update(extra=torch.zeros(2))),
                 f"the weights do not match {CONFIG} (not in the model: extra)", id="unexpected-key"),
    pytest.param(lambda folder: pickle_only(folder, "diffusion_pytorch_model.bin"),
                 f"it holds pickle weights (diffusion_pytorch_model.bin) but no {WEIGHTS}; pickle weights are refused",
                 id="pickle-bin"),
    pytest.param(lambda folder: pickle_only(folder, "model.pt"),
                 f"it holds pickle weights (model.pt) but no {WEIGHTS}; pickle weights are refused", id="pickle-pt"),
])
def test_a_damaged_model_folder_fails_with_one_clear_error(tmp_path, damage, problem):
    folder = tmp_path / "model"
    ConfounderGenerator(in_channels=3, num_classes=4, width=8, num_blocks=1).save_pretrained(folder)
    damage(folder)
    with pytest.raises(OSError) as error:
        ConfounderGenerator.from_pretrained(folder)
    message = str(error.value)
    assert message.startswith(f"could not load a ConfounderGenerator from '{folder}': {problem}")
    # One message, not a safetensors or torch traceback chained under it.
    assert error.value.__cause__ is None
    assert error.value.__suppress_context__ or error.value.__context__ is None


def test_pickle_weights_can_be_converted_as_the_message_says(tmp_path):
    folder = tmp_path / "model"
    generator = ConfounderGenerator(in_channels=3, num_classes=4, width=8, num_blocks=1)
    generator.save_pretrained(folder)
    pickle_only(folder, "diffusion_pytorch_model.bin")
    with pytest.raises(OSError, match="convert it once with: python -c ") as error:
        ConfounderGenerator.from_pretrained(folder)
    command = str(error.value).split("python -c ")[1].split("\n")[0]
    exec(command.strip('"'))  # noqa: S102 - the command the message tells the user to run
    loaded = ConfounderGenerator.from_pretrained(folder)
    for key, value in generator.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)


def test_pickle_loading_cannot_be_asked_for(tmp_path):
    make_generator().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="safetensors weights only"):
        ConfounderGenerator.from_pretrained(tmp_path, use_safetensors=False)


def test_missing_weights_are_refused_where_diffusers_only_warns(tmp_path):
    # A variant is read by diffusers without the folder check first, as a Hub repo is.
    make_generator().save_pretrained(tmp_path, variant="fp16")
    path = tmp_path / "diffusion_pytorch_model.fp16.safetensors"
    weights = load_file(path)
    weights.pop("stem.bias")
    save_file(weights, path, metadata={"format": "pt"})
    with pytest.raises(OSError, match=r"the weights do not match config.json \(missing from the weights: stem.bias\)"):
        ConfounderGenerator.from_pretrained(tmp_path, variant="fp16")
