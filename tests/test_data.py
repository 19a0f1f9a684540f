"""Loading classification datasets: broken input fails before training, naming the split, row, column or value.

Every dataset is generated here (a few 8×8 PNGs): no network, no ../shared.
"""

import io
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from modeling_confounder.hub_datasets import load_split
from training.data import load_classification_data

CLASSES = ["cat", "dog", "frog"]


def png(seed: int, size: int = 8) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def save(folder: Path, columns: dict[str, list], features: dict[str, object] | None = None,
         test_rows: int = 2) -> str:
    """A save_to_disk DatasetDict: ``columns`` as its train split, next to a small valid test split."""
    features = features or {"img": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES)}
    train = datasets.Dataset.from_dict(columns, features=datasets.Features(
        {name: feature for name, feature in features.items() if name in columns}))
    test = datasets.Dataset.from_dict(
        {"img": [{"bytes": png(100 + row), "path": None} for row in range(test_rows)], "label": [0] * test_rows},
        features=datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES)}))
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(folder))
    return str(folder)


def images(count: int) -> list[dict]:
    return [{"bytes": png(row), "path": None} for row in range(count)]


def test_a_valid_dataset_loads(tmp_path):
    source = save(tmp_path / "data", {"img": images(5), "label": [0, 1, 2, 0, 1]})
    data = load_classification_data(source, "train")
    assert data.images.shape == (5, 8, 8, 3) and data.num_classes == 3
    assert data.labels.tolist() == [0, 1, 2, 0, 1]
    np.testing.assert_array_equal(data.images[2].numpy(), np.asarray(Image.open(io.BytesIO(png(2)))))
    some = load_classification_data(source, "train", rows=(1, 3))
    assert some.labels.tolist() == [1, 2]
    np.testing.assert_array_equal(some.images.numpy(), data.images[1:3].numpy())


def test_a_parquet_folder_loads(tmp_path):
    (tmp_path / "data").mkdir()
    datasets.Dataset.from_dict({"img": images(3), "label": [2, 1, 0]}, features=datasets.Features(
        {"img": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES)})).to_parquet(
        str(tmp_path / "data" / "train-00000-of-00001.parquet"))
    data = load_classification_data(str(tmp_path), "train")
    assert data.labels.tolist() == [2, 1, 0] and data.images.shape == (3, 8, 8, 3)


@pytest.mark.parametrize("broken, reason", [
    pytest.param(b"not an image", "not an image, or in a format Pillow cannot read", id="text"),
    pytest.param(b"", "not an image, or in a format Pillow cannot read", id="empty"),
    pytest.param(png(7, size=64)[:300], "OSError: image file is truncated", id="truncated-png"),
])
@pytest.mark.parametrize("rows", [None, (2, 6)], ids=["whole-split", "rows-2-6"])
def test_a_broken_image_names_its_split_row_and_column(tmp_path, broken, reason, rows):
    pictures = images(6)
    pictures[3] = {"bytes": broken, "path": None}
    source = save(tmp_path / "data", {"img": pictures, "label": [0] * 6})
    with pytest.raises(ValueError) as error:
        load_classification_data(source, "train", rows=rows)
    # Row 3 of the split, also when the rows start at 2.
    assert str(error.value) == f"row 3 of {source}:train: the image in column 'img' cannot be decoded: {reason}"


def test_a_missing_image_names_its_row(tmp_path):
    source = save(tmp_path / "data", {"img": [*images(2), None], "label": [0, 1, 2]})
    with pytest.raises(ValueError, match=f"^row 2 of {source}:train has no image in column 'img'$"):
        load_classification_data(source, "train")


@pytest.mark.parametrize("labels, label_feature, message", [
    ([0, 1, -1, 2], datasets.ClassLabel(names=CLASSES),
     ("row 2 of {source}:train has label -1 in column 'label', outside the valid range 0..2; "
     "-1 (or an empty value) means 'no label'")),
    ([0, 1, 3, 3], datasets.ClassLabel(names=CLASSES),
     ("row 2 of {source}:train has label 3 in column 'label', outside the valid range 0..2; "
     "2 rows in all")),
    ([0, 1, None, 2], datasets.Value("int64"),
     "row 2 of {source}:train has label -1 in column 'label', outside the valid range 0..2"),
    ([-1, -1, -1, -1], datasets.ClassLabel(names=CLASSES),
     "row 0 of {source}:train has label -1 in column 'label', outside the valid range 0..2"),
])
def test_a_label_out_of_range_names_its_row_value_and_the_range(tmp_path, labels, label_feature, message):
    source = save(tmp_path / "data", {"img": images(4), "label": [0] * 4})
    # ClassLabel refuses out-of-range values when a dataset is built, not when a column is cast (or published).
    dataset = datasets.load_from_disk(source)
    dataset["train"] = dataset["train"].remove_columns("label").add_column(
        "label", labels, feature=datasets.Value("int64")).cast_column("label", label_feature)
    dataset.save_to_disk(str(tmp_path / "labels"))
    source = str(tmp_path / "labels")
    with pytest.raises(ValueError) as error:
        load_classification_data(source, "train")
    assert str(error.value).startswith(message.format(source=source))


def test_labels_are_checked_against_the_given_number_of_classes(tmp_path):
    # As evaluation does for the test split, with the train split's classes.
    source = save(tmp_path / "data", {"img": images(3), "label": [0, 1, 2]})
    with pytest.raises(ValueError, match=r"row 1 of .*:train has label 1 in column 'label', outside the valid "
                                         r"range 0\.\.0$"):
        load_classification_data(source, "train", num_classes=1, rows=(0, 2))


@pytest.mark.parametrize("rows, split, message", [
    (None, "train", "split 'train' of {source} is empty"),
    ((10, 20), "test", "rows 10:20 select nothing from split 'test' of {source}, which has 2 rows"),
    ((1, 1), "test", "rows 1:1 select nothing from split 'test' of {source}, which has 2 rows"),
    (None, "validation", "{source} has no split 'validation'; it has ['test', 'train']"),
])
def test_an_empty_split_names_the_split_and_dataset(tmp_path, rows, split, message):
    source = save(tmp_path / "data", {"img": [], "label": []})
    with pytest.raises(ValueError) as error:
        load_classification_data(source, split, rows=rows)
    assert str(error.value) == message.format(source=source)
    assert len(load_split(source, "test")) == 2  # the empty train split does not stop the others from loading


def test_an_empty_parquet_split_is_named(tmp_path):
    (tmp_path / "data").mkdir()
    datasets.Dataset.from_dict({"img": [], "label": []}, features=datasets.Features(
        {"img": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES)})).to_parquet(
        str(tmp_path / "data" / "train-00000-of-00001.parquet"))
    with pytest.raises(ValueError, match=f"^split 'train' of {tmp_path} is empty$"):
        load_classification_data(str(tmp_path), "train")


@pytest.mark.parametrize("columns, features, options, message", [
    (["img", "label"], {}, {"image_column": "photo"},
     "no image column 'photo'; columns are ['img', 'label'] (choose one with --image_column_name)"),
    (["img", "label"], {}, {"label_column": "target"},
     "no label column 'target'; columns are ['img', 'label'] (choose one with --label_column_name)"),
    (["path", "label"], {"path": datasets.Value("string")}, {},
     ("found no image column (a datasets.Image feature); columns are ['path', 'label'] "
     "(choose one with --image_column_name)")),
    (["img", "kind"], {"kind": datasets.Value("int64")}, {},
     ("found no label column (a datasets.ClassLabel feature, or one named 'label' or 'labels'); "
     "columns are ['img', 'kind'] (choose one with --label_column_name)")),
    (["img", "label"], {}, {"image_column": "label"},
     ("column 'label' holds ClassLabel values, not images (a datasets.Image feature); columns are ['img', 'label'] "
     "(choose one with --image_column_name)")),
    (["img", "label", "note"], {"note": datasets.Value("string")}, {"label_column": "note"},
     ("column 'note' holds string values, not class indices (a ClassLabel or integer column); "
     "columns are ['img', 'label', 'note'] (choose one with --label_column_name)")),
])
def test_a_missing_column_lists_the_columns_and_the_option(tmp_path, columns, features, options, message):
    values = {"img": images(2), "path": ["a.png", "b.png"], "label": [0, 1], "kind": [0, 1], "note": ["x", "y"]}
    features = {"img": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES), **features}
    source = save(tmp_path / "data", {name: values[name] for name in columns}, features)
    with pytest.raises(ValueError) as error:
        load_classification_data(source, "train", **options)
    assert str(error.value) == message
