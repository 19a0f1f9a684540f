"""The training and evaluation scripts on a tiny generated dataset: no ../shared, no network."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from modeling_confounder import ConfounderGenerator, protect
from tests.helpers import tiny_dataset
from training import evaluate, gan, key_removal, losses, owners, summarize, train, victim
from training.augmentation import crop_and_flip, scraper_transforms
from training.fitting import Optimization, make_optimizer
from training.models import weights_digest


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    return tiny_dataset(tmp_path_factory.mktemp("data") / "tiny")


def train_arguments(dataset: str, output_dir, *extra: str) -> list[str]:
    return ["--dataset_name", dataset, "--output_dir", str(output_dir), "--train_batch_size", "8",
            "--max_train_steps", "2", "--surrogate_model", "test_resnet", "--checkpointing_steps", "1", *extra]


def test_two_training_steps_give_a_loadable_generator(dataset, tmp_path):
    train.main(train_arguments(dataset, tmp_path / "run"))
    generator = ConfounderGenerator.from_pretrained(tmp_path / "run")
    assert (generator.config.in_channels, generator.config.num_classes) == (3, 4)
    assert sorted(path.name for path in (tmp_path / "run").glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert "accelerate launch -m training.train --dataset_name" in (tmp_path / "run" / "README.md").read_text()
    images = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    assert np.abs(protect(generator, images, labels=[0, 3]).astype(int) - images).max() <= 8


def test_grayscale_dataset_with_other_class_count(tmp_path):
    dataset = tiny_dataset(tmp_path / "gray", mode="L", classes=2, size=28)
    train.main(train_arguments(dataset, tmp_path / "run"))
    generator = ConfounderGenerator.from_pretrained(tmp_path / "run")
    assert (generator.config.in_channels, generator.config.num_classes) == (1, 2)


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_training_through_a_scrapers_grayscale_jpeg_and_colour_jitter_with_a_strided_surrogate(tmp_path, mode):
    dataset = tiny_dataset(tmp_path / "data", mode=mode, size=20)  # not a multiple of JPEG's 16-pixel blocks
    train.main(train_arguments(dataset, tmp_path / "run", "--scraper_transforms", "grayscale", "jpeg:10-20",
                               "resized-crop+color-jitter", "--surrogate_model", "test_resnet:strided"))
    card = (tmp_path / "run" / "README.md").read_text()
    assert "--scraper_transforms grayscale jpeg:10-20 resized-crop+color-jitter" in card


def test_one_surrogate_stem_each(dataset, tmp_path, capsys):
    train.main(train_arguments(dataset, tmp_path / "run", "--surrogate_model", "test_resnet:full",
                               "test_resnet:strided"))
    card = (tmp_path / "run" / "README.md").read_text()
    assert "acc/surrogate_test_resnet_full" in card and "acc/surrogate_test_resnet_strided" in card
    with pytest.raises(SystemExit):
        train.parse_args(train_arguments(dataset, tmp_path / "other", "--surrogate_model", "test_resnet:wide"))
    assert "surrogate test_resnet:wide: the stem is one of auto, full, strided" in capsys.readouterr().err


@pytest.mark.parametrize(("flags", "message"), [
    (["--label_predictor", "4", "1", "2"], "--label_predictor takes WIDTH and optionally EPOCHS, got 3"),
    (["--generator_config", "depth=3"], "expected KEY=VALUE with KEY one of width, blocks, upsampling"),
    (["--generator_config", "width=wide"], "--generator_config width= takes a whole number"),
    (["--generator_config", "upsampling=nearest"], "upsampling must be one of pixel_shuffle, bilinear"),
    (["--scraper_transforms", "grayscale:10-20"], "jpeg, color-jitter, resized-crop or jpeg:LOW-HIGH, or a chain"),
    (["--scraper_transforms", "resized-crop+blur"], "got 'resized-crop+blur'"),
    (["--epsilon", "300"], "epsilon is in pixel levels out of 255"),
    (["--train_rows", "100"], "expected START:STOP"),
])
def test_bad_flags_are_named(dataset, tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit):
        train.parse_args(train_arguments(dataset, tmp_path / "run", *flags))
    assert message in capsys.readouterr().err


def test_grouped_flags_set_the_run(dataset, tmp_path):
    config = train.parse_args(train_arguments(
        dataset, tmp_path / "run", "--loss_weights", "2", "3", "0.5", "--learning_rates", "1e-4", "2e-4", "3e-4",
        "--label_predictor", "16", "--generator_config", "width=8", "upsampling=bilinear", "--train_rows", "0:30",
        "--scraper_transforms", "jpeg", "--push_to_hub", "me/generator"))
    assert config.loss_weights == losses.LossWeights(2, 3, 0.5) and config.learning_rates == (1e-4, 2e-4, 3e-4)
    assert (config.label_predictor_width, config.label_predictor_epochs) == (16, 20)
    assert (config.generator_width, config.generator_blocks, config.generator_upsampling) == (8, 2, "bilinear")
    assert config.train_rows == (0, 30) and config.jpeg_quality == (10, 50) and config.push_to_hub == "me/generator"
    assert config.surrogate_stems() == [("test_resnet", "auto")]


@pytest.mark.parametrize("parse_args", [train.parse_args, evaluate.parse_args])
def test_an_entry_point_has_at_most_25_flags(parse_args, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    help_text = capsys.readouterr().out
    flags = set(re.findall(r"^  (--\w+)", help_text, re.MULTILINE)) - {"--help"}
    assert 10 < len(flags) <= 25


@pytest.mark.parametrize("shape", [(64, 3, 32, 32), (5, 1, 28, 20), (3, 3, 7, 9)])
def test_crop_and_flip_is_a_padded_crop_and_flip_per_image(shape):
    images = torch.rand(shape, requires_grad=True)
    augmented = crop_and_flip(images, torch.Generator().manual_seed(0))
    draws = torch.Generator().manual_seed(0)  # the same draws, in the same order, applied image by image
    pad = max(1, shape[-1] // 8)
    offsets = torch.randint(0, 2 * pad + 1, (shape[0], 2), generator=draws).tolist()
    flips = (torch.rand(shape[0], generator=draws) < 0.5).tolist()
    padded = F.pad(images, (pad, pad, pad, pad))
    expected = torch.stack([padded[i, :, y:y + shape[2], x:x + shape[3]].flip(-1) if flip
                            else padded[i, :, y:y + shape[2], x:x + shape[3]]
                            for i, ((y, x), flip) in enumerate(zip(offsets, flips))])
    assert torch.equal(augmented, expected)
    assert shape[0] < 10 or 0 < sum(flips) < shape[0]  # a batch of 64 has both flipped and unflipped images
    augmented.sum().backward()
    assert images.grad.sum() > 0  # differentiable: the min-min term trains the generator through it


def test_scraper_transforms_keep_shape_and_gradient_and_draw_per_image():
    images = torch.rand(64, 3, 16, 16, requires_grad=True)
    assert scraper_transforms(images, []) is images
    gray = scraper_transforms(images, ["grayscale"], generator=torch.Generator().manual_seed(0))
    unchanged = (gray == images).flatten(1).all(1)
    assert 0 < unchanged.sum() < 64  # drawn per image: some as they are, the others in gray
    assert torch.allclose(gray[~unchanged][:, 0], gray[~unchanged][:, 2])
    compressed = scraper_transforms(images, ["jpeg"], (10, 10), torch.Generator().manual_seed(0))
    assert compressed.shape == images.shape and 0 <= compressed.min() and compressed.max() <= 1
    compressed.sum().backward()
    assert images.grad.abs().sum() > 0  # differentiable: the generator trains through it
    for channels in (3, 1):  # gray images get brightness and contrast jitter only
        colours = torch.rand(64, channels, 16, 16, requires_grad=True)
        jittered = scraper_transforms(colours, ["color-jitter"], generator=torch.Generator().manual_seed(0))
        changed = (jittered != colours).flatten(1).any(1)
        assert jittered.shape == colours.shape and 0 < changed.sum() < 64
        jittered.sum().backward()
        assert colours.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"unknown scraper transform\(s\) \['blur'\]: choose from"):
        scraper_transforms(images, ["grayscale+blur"])


def test_resized_crops_rescale_each_image_and_chains_apply_both():
    torch.manual_seed(0)  # kornia draws its crops from torch's global generator
    images = torch.rand(64, 3, 16, 16, requires_grad=True)
    cropped = scraper_transforms(images, ["resized-crop"], generator=torch.Generator().manual_seed(0))
    changed = (cropped != images).flatten(1).any(1)
    assert cropped.shape == images.shape and 0 < changed.sum() < 64
    chained = scraper_transforms(images, ["resized-crop+grayscale"], generator=torch.Generator().manual_seed(0))
    both = (chained != images).flatten(1).any(1)
    assert torch.allclose(chained[both][:, 0], chained[both][:, 1])  # cropped, then in gray
    chained.sum().backward()
    assert images.grad.abs().sum() > 0


def test_resume_continues_from_the_checkpoint(dataset, tmp_path, capsys):
    train.main(train_arguments(dataset, tmp_path / "run"))
    first = ConfounderGenerator.from_pretrained(tmp_path / "run").state_dict()
    train.main(train_arguments(dataset, tmp_path / "run", "--resume_from_checkpoint", "checkpoint-1",
                               "--max_train_steps", "3"))
    assert "resumed from" in capsys.readouterr().out
    assert (tmp_path / "run" / "checkpoint-3").is_dir()
    resumed = ConfounderGenerator.from_pretrained(tmp_path / "run").state_dict()
    assert any(not torch.equal(first[key], resumed[key]) for key in first)


def test_max_train_minutes_stops_saves_and_resumes(dataset, tmp_path, capsys):
    train.main(train_arguments(dataset, tmp_path / "run", "--max_train_steps", "4",
                                          "--checkpointing_steps", "100", "--max_train_minutes", "0"))
    assert "--max_train_minutes 0: stopping at step 1 of 4" in capsys.readouterr().out
    assert (tmp_path / "run" / "checkpoint-1").is_dir()  # saved although off the checkpointing schedule
    assert '"steps": 1' in (tmp_path / "run" / "README.md").read_text()
    ConfounderGenerator.from_pretrained(tmp_path / "run")
    train.main(train_arguments(dataset, tmp_path / "run", "--max_train_steps", "4",
                                          "--resume_from_checkpoint", "latest"))
    assert (tmp_path / "run" / "checkpoint-4").is_dir()


def test_fine_tuning_checks_the_class_count(dataset, tmp_path):
    ConfounderGenerator(num_classes=10, width=8, num_blocks=1).save_pretrained(tmp_path / "ten")
    with pytest.raises(ValueError, match="train from scratch"):
        train.main(train_arguments(dataset, tmp_path / "run",
                                              "--model", str(tmp_path / "ten")))


def test_fine_tuning_starts_from_the_given_generator(dataset, tmp_path):
    ConfounderGenerator(num_classes=4, width=8, num_blocks=1).save_pretrained(tmp_path / "base")
    train.main(train_arguments(dataset, tmp_path / "run", "--model",
                                          str(tmp_path / "base"), "--epsilon", "4"))
    config = ConfounderGenerator.from_pretrained(tmp_path / "run").config
    assert (config.width, config.epsilon) == (8, pytest.approx(4 / 255))


def test_missing_label_column_fails_before_training(dataset, tmp_path):
    with pytest.raises(ValueError, match="no label column 'nope'"):
        train.main(train_arguments(dataset, tmp_path / "run", "--label_column_name", "nope"))


def test_accelerate_launch_with_two_cpu_processes(dataset, tmp_path):
    command = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "training.train",
               *train_arguments(dataset, tmp_path / "run", "--label_predictor", "4", "1")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    generator = ConfounderGenerator.from_pretrained(tmp_path / "run")
    assert (generator.config.num_classes, generator.config.predictor_width) == (4, 4)
    assert (tmp_path / "run" / "checkpoint-2").is_dir()


def test_evaluation_script_writes_a_report(dataset, tmp_path, capsys):
    ConfounderGenerator(num_classes=4, width=8, num_blocks=1).save_pretrained(tmp_path / "generator")
    report = evaluate.main([
        "--dataset_name", dataset, "--model", str(tmp_path / "generator"), "--victims", "test_resnet",
        "--settings", "clean", "labels", "label-free", "owner", "--epochs", "1", "--batch_size", "16",
        "--bf16_victims", "test_resnet", "--output_json", str(tmp_path / "report.json")])
    assert json.loads((tmp_path / "report.json").read_text()) == json.loads(json.dumps(report))
    assert [run["setting"] for run in report["runs"]] == ["clean", "labels", "label-free", "owner"]
    assert report["command"].startswith("python -m training.evaluate --dataset_name ")
    for run in report["runs"]:
        assert 0 <= run["test_acc"] <= run["best_test_acc"] <= 1 and len(run["history"]) == 1 and run["seed"] == 0
        assert run["bf16"]
    for quality in report["quality"].values():
        assert 0 < quality["linf_pixels"] <= 8 and quality["psnr"] > 30 and 0 < quality["ssim"] <= 1
    assert "| test_resnet | labels | 0 |" in capsys.readouterr().out
    weights = weights_digest(ConfounderGenerator.from_pretrained(tmp_path / "generator"))
    assert report["generator_weights"] == weights
    table = summarize.summarize([tmp_path / "report.json"])
    assert table.count("\n| test_resnet (1) |") == 4 and f"| generator | label-free | {weights[:7]} | 0 |" in table


def test_weights_digest_tells_weights_apart():
    torch.manual_seed(0)
    first = ConfounderGenerator(num_classes=4, width=8, num_blocks=1)
    torch.manual_seed(1)
    second = ConfounderGenerator(num_classes=4, width=8, num_blocks=1)
    digest = weights_digest(first)
    assert len(digest) == 12 and digest != weights_digest(second)
    second.load_state_dict(first.state_dict())
    assert weights_digest(second) == digest


def test_evaluation_rejects_bf16_for_a_victim_it_does_not_train(capsys):
    with pytest.raises(SystemExit):
        evaluate.parse_args(["--dataset_name", "x", "--victims", "test_resnet",
                                            "--bf16_victims", "mobilenetv3_small_100"])
    assert "--bf16_victims mobilenetv3_small_100: not among --victims (test_resnet)" in capsys.readouterr().err


def test_evaluation_trains_each_victim_once_per_seed(dataset, tmp_path, capsys):
    report = evaluate.main([
        "--dataset_name", dataset, "--victims", "test_resnet", "--settings", "clean", "--epochs", "1",
        "--batch_size", "16", "--seeds", "0", "1", "--output_json", str(tmp_path / "report.json")])
    runs = report["runs"]
    assert [run["seed"] for run in runs] == [0, 1] and not any(run["bf16"] for run in runs)
    assert report["generator_weights"] is None  # no generator is loaded for clean data
    assert runs[0]["history"] != runs[1]["history"] or runs[0]["train_acc"] != runs[1]["train_acc"]
    mean = (runs[0]["test_acc"] + runs[1]["test_acc"]) / 2
    assert f"| test_resnet | clean | 2 | {mean:.1%} |" in capsys.readouterr().out
    means = summarize.summarize([tmp_path / "report.json"], means=True)
    each = f"{runs[0]['test_acc']:.1%} / {runs[1]['test_acc']:.1%}"
    error = abs(runs[0]["test_acc"] - runs[1]["test_acc"]) / 2  # two runs: the stdev over √2 is half the gap
    assert means.splitlines()[2] == f"| test_resnet (1) | all | – | clean | 2 | {each} | {mean:.1%} | {error:.1%} |"
    balanced = summarize.summarize([tmp_path / "report.json"], means=True, metric="balanced_test_acc")
    each_balanced = f"{runs[0]['balanced_test_acc']:.1%} / {runs[1]['balanced_test_acc']:.1%}"
    assert "balanced clean test acc, each run" in balanced and each_balanced in balanced
    again = evaluate.main([
        "--dataset_name", dataset, "--victims", "test_resnet", "--settings", "clean", "--epochs", "1",
        "--batch_size", "16", "--seed", "1", "--output_json", str(tmp_path / "again.json")])
    assert again["runs"][0]["history"] == runs[1]["history"]  # --seed N is the same as --seeds N


def test_label_predictor_is_fitted_then_frozen(dataset, tmp_path, capsys):
    train.main(train_arguments(dataset, tmp_path / "run", "--label_predictor", "4", "1"))
    assert "label predictor: training accuracy" in capsys.readouterr().out
    generator = ConfounderGenerator.from_pretrained(tmp_path / "run")
    assert generator.config.predictor_width == 4 and generator.config.predictor_resolution == 16
    card = (tmp_path / "run" / "README.md").read_text()
    assert '"label_predictor_train_acc": ' in card and '"label_predictor_seconds": ' in card


def test_a_pretrained_generator_switches_upsampling_with_its_noise_and_predictor(dataset, tmp_path):
    torch.manual_seed(0)
    ConfounderGenerator(num_classes=4, width=8, num_blocks=1, predictor_width=4,
                        predictor_resolution=16).save_pretrained(tmp_path / "base")
    train.main(train_arguments(dataset, tmp_path / "run", "--model",
                                          str(tmp_path / "base"), "--generator_config", "upsampling=bilinear",
                                          "--max_train_steps", "0"))
    base = ConfounderGenerator.from_pretrained(tmp_path / "base").eval()
    switched = ConfounderGenerator.from_pretrained(tmp_path / "run").eval()
    assert switched.config.upsampling == "bilinear" and switched.config.predictor_width == 4
    unchanged = {key: value for key, value in base.state_dict().items() if not key.startswith("head.")}
    assert all(torch.equal(value, switched.state_dict()[key]) for key, value in unchanged.items())
    # The new head's half-resolution map is the mean of the old head's four sub-pixels.
    features = F.relu(torch.randn(2, 8, 5, 7))
    torch.testing.assert_close(switched.head(features), F.avg_pool2d(F.pixel_shuffle(base.head(features), 2), 2))
    back = gan.converted_head(switched.head.weight, switched.head.bias, "pixel_shuffle")
    assert torch.equal(back["head.weight"][4:8], switched.head.weight[1:2].expand(4, -1, -1, -1))


def test_a_fine_tune_keeps_its_epsilon_when_the_head_is_rebuilt(dataset, tmp_path):
    ConfounderGenerator(num_classes=4, width=8, num_blocks=1).save_pretrained(tmp_path / "base")
    train.main(train_arguments(dataset, tmp_path / "run", "--model", str(tmp_path / "base"), "--generator_config",
                               "upsampling=bilinear", "--epsilon", "4", "--max_train_steps", "0"))
    assert ConfounderGenerator.from_pretrained(tmp_path / "run").config.epsilon == 4 / 255


def test_a_label_predictor_can_be_added_to_a_trained_generator(dataset, tmp_path):
    ConfounderGenerator(num_classes=4, width=8, num_blocks=1).save_pretrained(tmp_path / "base")
    train.main(train_arguments(dataset, tmp_path / "run", "--model",
                                          str(tmp_path / "base"), "--label_predictor", "4", "1",
                                          "--max_train_steps", "0"))
    base = ConfounderGenerator.from_pretrained(tmp_path / "base").state_dict()
    extended = ConfounderGenerator.from_pretrained(tmp_path / "run").state_dict()
    assert all(torch.equal(base[key], extended[key]) for key in base)
    assert any(key.startswith("label_predictor.") for key in extended)


def test_the_data_flags_load_the_chosen_rows_of_both_splits(dataset):
    import argparse

    from training.data import add_data_arguments, load_train_and_test

    parser = argparse.ArgumentParser()
    add_data_arguments(parser)
    args = parser.parse_args(["--dataset_name", dataset, "--train_rows", "4:14", "--test_rows", "0:6",
                              "--resolution", "8"])
    train_split, test_split = load_train_and_test(args)
    assert train_split.images.shape == (10, 8, 8, 3) and train_split.labels.tolist()[:2] == [0, 1]
    assert test_split.images.shape == (6, 8, 8, 3) and test_split.num_classes == 4
    without_test = argparse.ArgumentParser()
    add_data_arguments(without_test, test_split=False)
    assert "--test_rows" not in without_test.format_help() and "--train_rows" in without_test.format_help()


def test_keyed_training_evaluation_and_owners(dataset, tmp_path, capsys):
    """A keyed generator trains with fresh keys per batch, is evaluated with per-seed secrets, and names owners."""
    train.main(train_arguments(dataset, tmp_path / "keyed", "--generator_config", "key_dim=256", "width=8",
                               "blocks=1", "--label_dropout", "0"))
    generator = ConfounderGenerator.from_pretrained(tmp_path / "keyed")
    assert generator.config.key_dim == 256 and generator.config.predictor_width == 0
    report = evaluate.main([
        "--dataset_name", dataset, "--model", str(tmp_path / "keyed"), "--victims", "test_resnet", "--settings",
        "labels", "owner", "--epochs", "1", "--batch_size", "16", "--seeds", "0", "1",
        "--output_json", str(tmp_path / "report.json")])
    assert [(run["setting"], run["seed"]) for run in report["runs"]] == [
        ("labels", 0), ("labels", 1), ("owner", 0), ("owner", 1)]
    assert 0 < report["quality"]["labels"]["linf_pixels"] <= 8
    with pytest.raises(ValueError, match="no label-free path"):
        evaluate.main(["--dataset_name", dataset, "--model", str(tmp_path / "keyed"), "--victims", "test_resnet",
                       "--settings", "label-free", "--epochs", "1", "--output_json", str(tmp_path / "x.json")])
    owners_report = owners.main([
        "--dataset_name", dataset, "--model", str(tmp_path / "keyed"), "--owners", "5", "--victims",
        "test_resnet", "--epochs", "1", "--batch_size", "16", "--output_json", str(tmp_path / "owners.json")])
    assert owners_report["keyed"] and owners_report["runs"][0]["setting"] == "5 owners"
    assert "| test_resnet | keyed | 5 | 1 |" in capsys.readouterr().out


def test_key_removal_reports_what_a_known_key_removes(tmp_path):
    torch.manual_seed(0)
    ConfounderGenerator(num_classes=0, key_dim=256, width=8, num_blocks=1).save_pretrained(tmp_path / "keyed")
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(photo)
    report = key_removal.main([str(photo), "--model", str(tmp_path / "keyed"), "--output_json",
                               str(tmp_path / "removal.json")])
    result = report["photos"]["photo.png"]
    assert 0 < result["noise_rms"] <= 8 and result["left_with_the_key_rms"] >= 0
    assert json.loads((tmp_path / "removal.json").read_text()) == report


def test_balanced_accuracy_weighs_every_class_alike():
    labels = torch.tensor([0, 0, 0, 0, 1, 2])
    predicted = torch.tensor([0, 0, 0, 0, 2, 2])  # 5 of 6 right, but class 1 never
    assert victim.balanced_accuracy(predicted, labels) == pytest.approx((1 + 0 + 1) / 3)


@pytest.mark.parametrize("steps", [1, 2, 4, 10, 40])
def test_one_cycle_schedule_runs_however_few_the_steps(steps):
    model = torch.nn.Linear(2, 2)
    optimizer, schedule = make_optimizer(model, Optimization("sgd", 0.1, warmup=0.25), steps)
    for _ in range(steps):
        optimizer.step()
        schedule.step()
    assert 0 < schedule.get_last_lr()[0] <= 0.1
