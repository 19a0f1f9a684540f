import io
import os
import socket
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from modeling_confounder import protect
from modeling_confounder.cli import main
from modeling_confounder.hub_datasets import protect_dataset

from .conftest import make_generator

FEATURES = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(num_classes=3),
                              "extra": datasets.Value("string")})
ROWS = 10


def as_jpeg(image: Image.Image) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    buffer.seek(0)
    return Image.open(buffer)


def make_dataset(rng: np.random.Generator) -> datasets.Dataset:
    """Tiny RGB and grayscale images of two sizes; every other one decodes from JPEG bytes."""
    images = []
    for index in range(ROWS):
        shape = (12, 12, 3) if index % 3 else (10, 14)
        image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))
        images.append(as_jpeg(image) if index % 2 else image)
    labels, extras = [index % 3 for index in range(ROWS)], [f"row {index}" for index in range(ROWS)]
    return datasets.Dataset.from_dict({"img": images, "label": labels, "extra": extras}, features=FEATURES)


@pytest.fixture
def source(tmp_path, rng) -> str:
    make_dataset(rng).save_to_disk(str(tmp_path / "source"))
    return str(tmp_path / "source")


@pytest.fixture
def model(tmp_path) -> str:
    make_generator().save_pretrained(tmp_path / "model")
    return str(tmp_path / "model")


def protect_split(source: str, model: str, output: Path, *options: str) -> datasets.Dataset:
    assert main(["protect", "--dataset", source, "--output", str(output), "--model", model,
                 "--device", "cpu", *options]) == 0
    return datasets.load_from_disk(str(output))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=int)


def test_protects_every_image_losslessly_and_keeps_the_other_columns(source, model, tmp_path, capsys):
    original = datasets.load_from_disk(source)
    images = list(original["img"])
    assert {image.format for image in images} == {"JPEG", "PNG"}
    protected = protect_split(source, model, tmp_path / "out", "--batch-size", "4")
    assert f"protected {ROWS} images of {source}:train -> {tmp_path / 'out'}" in capsys.readouterr().out
    assert not (tmp_path / "out" / "_shards").exists()

    assert protected.features == original.features and protected.num_rows == ROWS
    assert list(protected["label"]) == list(original["label"])
    assert list(protected["extra"]) == list(original["extra"])
    expected = protect(make_generator(), images, device="cpu")
    for before, after, wanted in zip(images, protected["img"], expected):
        assert (after.size, after.mode) == (before.size, before.mode)
        difference = pixels(after) - pixels(before)
        assert np.abs(difference).max() <= 8 and np.any(difference != 0)
        assert np.array_equal(pixels(after), pixels(wanted))
    # Stored as PNG even where the input was JPEG: re-encoding as JPEG would lose the noise.
    stored = protected.cast_column("img", datasets.Image(decode=False))["img"]
    assert all(cell["bytes"].startswith(b"\x89PNG\r\n\x1a\n") for cell in stored)


def test_labels_from_the_label_column_or_one_owner_code(source, model, tmp_path):
    original = datasets.load_from_disk(source)
    label_free = protect_split(source, model, tmp_path / "free", "--rows", "0:6")
    with_labels = protect_split(source, model, tmp_path / "labels", "--rows", "0:6", "--use-labels")
    owner = protect_split(source, model, tmp_path / "owner", "--rows", "0:6", "--label", "2")
    assert label_free.num_rows == with_labels.num_rows == owner.num_rows == 6

    generator = make_generator()
    images = list(original["img"])[:6]
    for protected, labels in [(with_labels, list(original["label"])[:6]), (owner, 2)]:
        wanted = protect(generator, images, labels=labels, device="cpu")
        assert all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(protected["img"], wanted))
    assert not all(np.array_equal(pixels(free), pixels(labelled))
                   for free, labelled in zip(label_free["img"], with_labels["img"]))


def test_python_api_on_an_in_memory_dataset(rng):
    dataset, generator = make_dataset(rng), make_generator()
    protected = protect_dataset(generator, dataset, "img", "label", use_labels=True, epsilon=4 / 255)
    wanted = protect(generator, list(dataset["img"]), labels=list(dataset["label"]), epsilon=4 / 255)
    assert all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(protected["img"], wanted))
    with pytest.raises(ValueError, match="pass only one of them"):
        protect_dataset(generator, dataset, "img", "label", use_labels=True, labels=1)
    with pytest.raises(ValueError, match="not a decoded datasets.Image column"):
        protect_dataset(generator, dataset, "extra")


@pytest.mark.parametrize("options, message", [
    (["--image-column", "photo"], (r"no image column 'photo'; columns are \['img', 'label', 'extra'\] "
                                  r"\(choose one with --image-column\)")),
    (["--use-labels", "--label-column", "owner"], "no label column 'owner'.*--label-column"),
    (["--use-labels", "--label", "1"], "pass only one of them"),
    (["--push-to-hub"], "--push-to-hub needs --hub-repo"),
    (["--format", "tiff", "--resume"], "--format, --resume apply to image files, not to --dataset"),
    (["--rows", "20:30"], "--rows 20:30 selects nothing from split 'train' of .*, which has 10 rows"),
])
def test_dataset_errors_are_explained(source, model, tmp_path, options, message):
    with pytest.raises(SystemExit, match=message):
        main(["protect", "--dataset", source, "-o", str(tmp_path / "out"), "--model", model, *options])
    assert not (tmp_path / "out").exists()


def test_refuses_a_non_empty_output_dir(source, model):
    with pytest.raises(SystemExit, match="already exists and is not an empty folder"):
        main(["protect", "--dataset", source, "--output", source, "--model", model])


@pytest.mark.parametrize("inputs", [[], ["photo.png", "--dataset", "some/dataset"]])
def test_needs_exactly_one_of_inputs_and_dataset(inputs, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["protect", *inputs, "--output", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert "INPUT...) or --dataset NAME_OR_PATH: give exactly one of them" in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_accelerate_launch_on_two_processes_matches_one_process(source, model, tmp_path):
    single = protect_split(source, model, tmp_path / "single", "--rows", "0:7")
    script = Path(sys.executable).parent / "accelerate"
    module = [sys.executable, "-m", "accelerate.commands.launch"]
    launcher = [str(script), "launch"] if script.exists() else module
    command = [*launcher, "--cpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
                "--dynamo_backend", "no", "--main_process_port", str(free_port()),
                "-m", "modeling_confounder.cli", "protect", "--dataset", source,
                "--output", str(tmp_path / "multi"), "--model", model, "--rows", "0:7"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("protected 7 images of") == 1

    multi = datasets.load_from_disk(str(tmp_path / "multi"))
    assert multi.features == single.features and list(multi["extra"]) == [f"row {i}" for i in range(7)]
    assert list(multi["label"]) == list(single["label"])
    assert all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(multi["img"], single["img"]))
    assert not (tmp_path / "multi" / "_shards").exists()


def test_a_damaged_image_is_reported_with_its_row_and_leaves_nothing_behind(rng, model, tmp_path):
    dataset = make_dataset(rng).cast_column("img", datasets.Image(decode=False))
    rows = dataset.to_list()
    rows[7]["img"] = {"bytes": b"\x89PNG\r\n\x1a\n cut short", "path": None}
    damaged = datasets.Dataset.from_list(rows, features=dataset.features)
    damaged.cast_column("img", datasets.Image()).save_to_disk(str(tmp_path / "damaged"))
    with pytest.raises(SystemExit, match=r"row 7 of the dataset: the image in column 'img' cannot be decoded: "):
        main(["protect", "--dataset", str(tmp_path / "damaged"), "-o", str(tmp_path / "out"), "--model", model])
    assert not (tmp_path / "out" / "_shards").exists()


def test_a_shard_names_rows_by_their_place_in_the_whole_split(rng):
    """Each ``accelerate launch`` process protects one shard: its errors count rows from the split's start."""
    dataset = make_dataset(rng).cast_column("img", datasets.Image(decode=False))
    rows = dataset.to_list()
    rows[2]["img"] = {"bytes": b"not an image", "path": None}
    damaged = datasets.Dataset.from_list(rows, features=dataset.features).cast_column("img", datasets.Image())
    with pytest.raises(ValueError, match=r"row 7 of the dataset: the image in column 'img' cannot be decoded"):
        protect_dataset(make_generator(), damaged, "img", first_row=5)


def test_a_keyed_generator_protects_each_class_of_a_dataset_with_its_own_key(tmp_path):
    keyed = make_generator(num_classes=0, key_dim=256)
    rng = np.random.default_rng(0)
    pictures = [Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)) for _ in range(4)]
    dataset = datasets.Dataset.from_dict({"image": pictures, "label": [0, 1, 7, 1]}, features=datasets.Features(
        {"image": datasets.Image(), "label": datasets.Value("int64")}))
    protected = protect_dataset(keyed, dataset, "image", "label", use_labels=True, key="secret",
                                cache_file_name=str(tmp_path / "out.arrow"))
    expected = protect(keyed, pictures, labels=[0, 1, 7, 1], key="secret")
    assert all(np.array_equal(np.asarray(row), np.asarray(want)) for row, want in zip(protected["image"], expected))
    with pytest.raises(ValueError, match="this generator is keyed"):
        protect_dataset(keyed, dataset, "image", "label", use_labels=True)
