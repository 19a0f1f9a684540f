"""The 🤗 transformers victim: the Trainer recipe on tiny generated images (determinism, the per-epoch history, the
errors), its family label, and the benchmark running it beside a timm victim. No ../shared, no network."""

import pytest
import torch

from tests.helpers import tiny_dataset
from training.benchmark import protocols, runner
from training.benchmark import report as reporting
from training.transformers_models import TransformersClassifier
from training.victim import train_with_trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def images(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (count, 32, 32, 3), dtype=torch.uint8, generator=generator),
            torch.arange(count) % 4)


def train(seed: int = 0, epochs: int = 2):
    train_images, train_labels = images(24, 0)
    test_images, test_labels = images(12, 1)
    return train_with_trainer("hf_convnext", train_images, train_labels, test_images, test_labels, 4, epochs,
                              images(8, 2), seed=seed, crop_scale=0.5, progress=False)


def test_the_trainer_recipe_is_deterministic_and_keeps_a_history_per_epoch():
    (first, model), (again, _) = train(), train()
    assert first.to_dict() | {"seconds": 0} == again.to_dict() | {"seconds": 0}
    assert len(first.history) == 2 and all(0 <= value <= 1 for value in first.history)
    assert 0 <= first.balanced_test_acc <= 1 and first.best_test_acc is None
    assert model(torch.rand(3, 3, 32, 32)).shape == (3, 4)


def test_the_trainer_needs_validation_images():
    with pytest.raises(ValueError, match="needs validation images"):
        train_with_trainer("hf_convnext", *images(8, 0), *images(4, 1), 4, 1, None)


def test_an_unknown_transformers_victim_says_which_exist():
    with pytest.raises(ValueError, match="unknown transformers victim 'hf_nothing': choose one of hf_convnext"):
        TransformersClassifier("hf_nothing", 4)


def test_the_convnext_is_labelled_a_held_out_depthwise_family():
    found = reporting.victim_architectures(["hf_convnext"], "test_resnet")
    assert found["hf_convnext"] == {"family": "convnext", "depthwise": True, "white_box": False}


@pytest.mark.parametrize("extra, message", [
    (["--victims", "hf_convnext", "--defenses", "none", "color-jitter"], "put a timm victim first"),
    (["--victims", "test_resnet", "hf_convnext", "--bf16_victims", "hf_convnext"], "train with the Trainer in float32"),
])
def test_what_the_trainer_cannot_do_is_a_usage_error(extra, message, capsys):
    with pytest.raises(SystemExit):
        protocols.parse_args(["--dataset_name", "data", *extra])
    assert message in capsys.readouterr().err


def test_the_benchmark_trains_it_beside_a_timm_victim(tmp_path):
    dataset = tiny_dataset(tmp_path / "data", size=32)
    report = runner.main(["--dataset_name", dataset, "--train_rows", "0:40", "--test_rows", "0:20",
                          "--output_dir", str(tmp_path / "out"), "--cache_dir",
                          str(tmp_path / "cache"), "--victims", "test_resnet", "hf_convnext:2", "--epochs", "1",
                          "--methods", "clean", "random", "--defenses", "none", "--workers", "1",
                          "--victim_seeds", "0", "--options", "batch_size=16", "validation_rows=8"])
    runs = {(run["victim"], run["method"]): run for run in report["runs"]}
    assert set(runs) == {(victim, method) for victim in ("test_resnet", "hf_convnext")
                         for method in ("clean", "random")}
    assert len(runs["hf_convnext", "random"]["history"]) == 2 and runs["hf_convnext", "clean"]["n_train"] == 32
