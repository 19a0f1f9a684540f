"""Photos through their owners and a scraper (training.photos), and the benchmark protocol built on them: full-size
photos of several sizes, a validation split, random resized crops and balanced accuracy. Tiny generated photos."""

from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from training.benchmark import protocols, runner
from training.data import load_classification_data
from training.defenses import chain, resized_crop
from training.photos import Photos, publish

SIZES = [(40, 30), (30, 52), (36, 36)]  # (width, height): landscape, portrait, square


pytestmark = pytest.mark.usefixtures("one_thread")


def photo_dataset(folder: Path, rows: int = 24, classes: int = 3) -> str:
    """Train, validation and test splits of random photos of the ``SIZES``, labels cycling over ``classes``."""
    rng = np.random.default_rng(0)

    def split(count: int) -> datasets.Dataset:
        photos = [Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
                  for width, height in (SIZES[i % len(SIZES)] for i in range(count))]
        return datasets.Dataset.from_dict(
            {"image": photos, "label": [i % classes for i in range(count)]},
            features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=classes)}))

    datasets.DatasetDict({"train": split(rows), "validation": split(rows // 2), "test": split(rows // 2)}
                         ).save_to_disk(str(folder))
    return str(folder)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> str:
    return photo_dataset(tmp_path_factory.mktemp("photos") / "photos")


def test_published_photo_changes_only_its_centre_square_within_epsilon():
    photo = Image.fromarray(np.random.default_rng(1).integers(0, 256, (30, 52, 3), dtype=np.uint8))
    noise = torch.full((3, 8, 8), 8.0)
    noise[:, ::2] = -8.0
    change = np.asarray(publish(photo, noise), dtype=np.int16) - np.asarray(photo, dtype=np.int16)
    assert np.abs(change).max() <= 8
    assert (change[:, :11] == 0).all() and (change[:, 41:] == 0).all()  # the square is columns 11..40
    assert np.abs(change[:, 11:41]).max() > 0


def test_round_trip_without_noise_gives_back_the_clean_images(photos):
    clean = load_classification_data(photos, "train", resolution=16).images
    scraped, published = Photos(photos, "train", None, None).round_trip(clean, clean)
    assert torch.equal(scraped, clean) and published["linf_pixels"] == 0


def test_round_trip_keeps_the_photos_within_epsilon_and_the_noise_visible(photos):
    clean = load_classification_data(photos, "train", resolution=16, rows=(4, 12)).images
    noise = torch.randint(-8, 9, clean.shape, generator=torch.Generator().manual_seed(0))
    protected = (clean.to(torch.int16) + noise).clamp(0, 255).to(torch.uint8)
    scraped, published = Photos(photos, "train", None, (4, 12)).round_trip(clean, protected)
    assert scraped.shape == clean.shape and published["linf_pixels"] <= 8
    assert 20 < published["psnr_native"] < 60
    change = scraped.to(torch.int16) - clean.to(torch.int16)
    assert change.abs().float().mean() > 1  # the scraper still sees noise, if not all of it


def test_resized_crop_keeps_size_and_labels_and_chain_skips_none():
    images, labels = torch.rand(4, 3, 16, 16), torch.arange(4)
    cropped, same = resized_crop(None, images, labels, torch.Generator(), scale=0.3)
    assert cropped.shape == images.shape and same is labels and not torch.equal(cropped, images)
    assert chain(None, None) is None and chain(None, resized_crop) is resized_crop

    def add_one(model, images, labels, generator):
        return images + 1, labels + 1

    images_out, labels_out = chain(add_one, add_one)(None, images, labels, torch.Generator())
    assert torch.equal(images_out, images + 2) and torch.equal(labels_out, labels + 2)


def test_the_clothing_protocol_validates_on_its_split_and_reports_balanced_accuracy():
    args = protocols.parse_args(["--protocol", "clothing"])
    assert (args.validation_split, args.validation_rows, args.photos, args.balanced) == ("validation", 0, 1, 1)
    assert {"pretrained_lite0", "pretrained_lite0_probe"} <= set(args.victims)
    assert protocols.parse_args([]).photos is None  # the other protocols leave the new options unset


def test_a_photo_benchmark_runs_end_to_end(photos, tmp_path):
    report = runner.main(["--protocol", "clothing", "--dataset_name", photos, "--resolution", "16",
                          "--output_dir", str(tmp_path / "out"), "--cache_dir", str(tmp_path / "cache"),
                          "--methods", "clean", "random", "confounder-keyed", "--victims", "test_resnet",
                          "--defenses", "none", "color-jitter", "--defense_methods", "clean",
                          "--epochs", "1", "--workers", "1", "--victim_seeds", "0",
                          "--options", "batch_size=8", "crop_scale=0.5"])
    assert report["n_validation"] == 12 and report["balanced"] and report["photos"]
    assert {(run["method"], run["defense"]) for run in report["runs"]} == {
        ("clean", "none"), ("random", "none"), ("confounder-keyed", "none"), ("clean", "color-jitter")}
    for label in ("random", "confounder-keyed"):
        assert report["quality"][label]["published_photos"]["linf_pixels"] <= 8
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert "Balanced accuracy" in markdown and "photos' PSNR" in markdown and "random resized crops" in markdown


def test_validating_on_a_split_and_on_training_rows_at_once_is_refused(photos, tmp_path):
    with pytest.raises(ValueError, match="not both"):
        runner.main(["--protocol", "clothing", "--dataset_name", photos, "--resolution", "16", "--methods",
                     "clean", "--victims", "test_resnet", "--defenses", "none", "--output_dir", str(tmp_path),
                     "--options", "validation_rows=4", "--estimate_only"])
