"""The benchmark harness on a tiny generated dataset: every method and defense, the report, the cache, the
sanity logic and the time estimate. No ../shared, no network; one epoch and tiny budgets everywhere."""

import json
import time
from concurrent.futures import Executor, Future
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from modeling_confounder import DEFAULT_MODEL, ConfounderGenerator
from tests.helpers import tiny_dataset
from training import attacks, methods, speed
from training.augmentation import crop_and_flip
from training.benchmark import markdown, plan, protocols, runner
from training.benchmark import report as reporting
from training.data import ImageClassificationData
from training.defenses import (
    DEFENSES,
    Standardize,
    adversarial_training,
    build_defenses,
    color_jitter,
    cutmix,
    cutout,
    downsize,
    grayscale,
    jpeg,
    mixup,
    trivial_augment,
)
from training.methods import METHODS
from training.models import weights_digest
from training.victim import train_victim

TINY_BUDGETS = ["--epochs", "1", "--workers", "1", "--options", "batch_size=16", "em_rounds=1", "em_train_steps=1",
                "em_steps=2", "tap_epochs=1", "tap_steps=2", "confounder_steps=2", "validation_rows=8",
                "method_budget=60", "--victim_seeds", "0"]
VICTIMS = ["test_resnet", "mobilenetv3_small_050"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    return tiny_dataset(tmp_path_factory.mktemp("data") / "tiny")


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("benchmark")
    return {"output": root / "results", "cache": root / "cache"}


def arguments(dataset: str, output: Path, cache: Path, *extra: str) -> list[str]:
    return ["--dataset_name", dataset, "--train_rows", "0:1000", "--output_dir", str(output), "--cache_dir",
            str(cache), *TINY_BUDGETS, *extra]


@pytest.fixture(scope="module")
def report(dataset, folders) -> dict:
    """Every method without defense on two victims; every other defense on the first with clean data and patch
    noise, and transfer with TAP (the cheapest method with a surrogate)."""
    return runner.main(arguments(dataset, folders["output"], folders["cache"], "--victims", *VICTIMS,
                                    "--bf16_victims", VICTIMS[0], "--methods", *METHODS,
                                    "--defenses", *DEFENSES, "--defense_methods", "clean", "patch",
                                    "--transfer_methods", "tap"))


def test_every_method_and_every_defense_runs(report):
    runs = report["runs"]
    assert {(run["method"], run["victim"]) for run in runs if run["defense"] == "none"} == {
        (method, victim) for method in METHODS for victim in VICTIMS}
    assert {run["defense"] for run in runs} == set(DEFENSES)
    assert {run["victim"] for run in runs if run["defense"] not in ("none", "transfer")} == {VICTIMS[0]}
    transfer = {(run["method"], run["victim"], run["surrogate"]) for run in runs
                if run["defense"] == "transfer"}
    assert transfer == {("tap", victim, "mobilenetv3_small_050") for victim in VICTIMS}
    (one_class,) = (run for run in runs if run["defense"] == "one-class")
    assert one_class["method"] == "patch"  # clean data has no one-class reference
    assert one_class["protected_class"] == 0 and one_class["protected_class_acc"] == one_class["class_acc"][0]
    # clean data under partial protection: the victim sees the unprotected images alone
    assert {run["defense"]: run["n_train"] for run in runs if run["method"] == "clean"
            and run["defense"].startswith("partial")} == {"partial20": 26, "partial50": 16, "partial80": 6}
    assert {run["n_train"] for run in runs if run["method"] == "patch"} == {32}
    for run in runs:
        assert len(run["history"]) == 1 and len(run["class_acc"]) == 4 and 0 <= run["auc"] <= 1


def test_results_json_has_the_schema_of_the_issue(report, folders):
    stored = json.loads((folders["output"] / "results.json").read_text())
    assert stored == json.loads(json.dumps(report))
    assert {"protocol", "dataset", "n_train", "n_test", "epsilon", "hardware", "runs", "quality",
            "speed"} <= set(stored)
    assert (stored["protocol"], stored["n_train"], stored["n_test"]) == ("quick", 32, 20)  # 8 of 40 validate
    assert stored["epsilon"] == pytest.approx(8 / 255) and stored["majority_rate"] == pytest.approx(0.25)
    assert {"torch", "timm", "python"} <= set(stored["versions"])
    assert stored["n_validation"] == 8 and stored["victim_seeds"] == [0]
    for run in stored["runs"]:
        assert {"method", "victim", "defense", "seed", "test_acc", "validation_acc", "seconds"} <= set(run)
        assert 0 <= run["test_acc"] <= 1 and run["seconds"] > 0 and run["best_test_acc"] is None
        assert run["validation_acc"] == run["history"][-1]  # the history watches the validation images
        assert run["bf16"] == (run["victim"] == "test_resnet")  # --bf16_victims
    protected = set(METHODS) - {"clean"} | {"tap-transfer"}
    assert set(stored["quality"]) == set(stored["speed"]) == protected
    for label in protected:
        assert {"psnr", "ssim", "linf"} <= set(stored["quality"][label])
        speed = stored["speed"][label]
        assert speed["generate_seconds"] >= 0 and speed["images_per_second"] > 0 and speed["cpu_seconds"] > 0
        assert speed["pretrained"] == (label.startswith("confounder") and "trained" not in label)


def test_every_protected_training_set_stays_within_epsilon(report, folders):
    stored = sorted(folders["cache"].glob("*.npz"))
    assert {path.stem.rsplit("-", 1)[0] for path in stored} == set(report["quality"])
    for path in stored:
        with np.load(path) as cached:
            assert 0 < np.abs(cached["noise"]).max() <= 8, path.name
    assert all(0 < quality["linf_pixels"] <= 8 for quality in report["quality"].values())


@pytest.mark.parametrize("name", [name for name in METHODS if name != "confounder-trained"])
def test_new_images_are_protected_within_epsilon(name, tmp_path):
    """``perturb`` on images that ``fit`` never saw (confounder-trained shares ConfounderGAN.perturb)."""
    args = protocols.parse_args([*TINY_BUDGETS, "--cache_dir", str(tmp_path)])
    method = runner.build_methods(args, num_classes=4)[name]
    images = torch.randint(0, 256, (8, 16, 16, 3), dtype=torch.uint8)
    labels = torch.arange(8) % 4
    method.fit(images[:4], labels[:4])
    change = (method.perturb(images[4:], labels[4:]).int() - images[4:].int()).abs().max().item()
    assert change <= 8 and (change > 0) == (name != "clean")


def tiny_images() -> tuple[torch.Tensor, torch.Tensor]:
    """Eight random 16×16 RGB images of four classes."""
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (8, 16, 16, 3), dtype=torch.uint8, generator=generator), torch.arange(8) % 4


def assert_within_epsilon(protected: torch.Tensor, images: torch.Tensor, levels: int = 8) -> None:
    assert protected.dtype == torch.uint8 and (protected.int() - images.int()).abs().max().item() <= levels


def test_pgd_through_a_transform_stays_in_the_ball_and_the_image_range():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(4))
    images, labels = torch.rand(6, 3, 16, 16), torch.arange(6) % 4
    epsilon = 8 / 255
    crop = partial(crop_and_flip, generator=torch.Generator().manual_seed(0))
    noise = attacks.pgd(model, images, labels, epsilon, 3, epsilon, maximize=False, transform=crop)
    assert noise.abs().max() <= epsilon + 1e-6 and noise.abs().max() > 0
    assert (images + noise).min() >= 0 and (images + noise).max() <= 1


def test_em_under_a_tiny_budget_runs_one_round(capsys):
    images, labels = tiny_images()
    em = methods.ErrorMinimizingNoise(num_classes=4, rounds=3, train_steps=1, steps=2, batch_size=4,
                                      stop_accuracy=1.0, budget_seconds=0.01)
    protected = em.fit(images, labels)
    assert capsys.readouterr().out.count("EM round") == 1
    assert_within_epsilon(protected, images)


def test_tap_under_a_tiny_budget_takes_at_least_one_pgd_step():
    images, labels = tiny_images()
    tap = methods.TargetedAdversarialPoison(num_classes=4, surrogate_epochs=1, steps=3, batch_size=4,
                                            budget_seconds=0.01)
    protected = tap.fit(images, labels)
    assert 1 <= tap.pgd_steps <= tap.steps and tap.surrogate_steps >= 1
    assert_within_epsilon(protected, images)
    assert_within_epsilon(tap.perturb(images, labels), images)


def test_a_surrogate_method_takes_the_stem_of_its_surrogate():
    images, labels = tiny_images()
    em = methods.ErrorMinimizingNoise(num_classes=4, surrogate="test_resnet:strided", rounds=1, train_steps=1,
                                      steps=1, batch_size=4)
    assert_within_epsilon(em.fit(images, labels), images)
    strided, full = (methods.surrogates.surrogate_classifier(spec, 4, 3, 32) for spec in
                     ("test_resnet:strided", "test_resnet"))
    features = [model.eval().forward_features(torch.rand(1, 3, 32, 32, device=methods.device())).shape[-1]
                for model in (strided, full)]
    assert features[0] * 4 == features[1]  # timm's ImageNet stem: a stride-2 conv and a max-pool
    assert em.work(10)[:2] == ("test_resnet", False)
    with pytest.raises(ValueError, match="surrogate test_resnet:wide: the stem is one of auto, full, strided"):
        methods.TargetedAdversarialPoison(surrogate="test_resnet:wide")
    assert not reporting.victim_architectures(["test_byobnet"], "test_resnet:strided")["test_byobnet"]["white_box"]


def test_the_keyed_generator_is_fine_tuned_in_the_run_and_protects_with_keys(tmp_path):
    args = protocols.parse_args([*TINY_BUDGETS, "--cache_dir", str(tmp_path)])
    method = runner.build_methods(args, num_classes=4)["confounder-keyed-tuned"]
    images, labels = tiny_images()
    assert_within_epsilon(method.fit(images, labels), images)
    tuned, shipped = (ConfounderGenerator.from_pretrained(model) for model in (method.protector.model, DEFAULT_MODEL))
    assert tuned.config.key_dim == shipped.config.key_dim > 0
    assert weights_digest(tuned) != weights_digest(shipped) == method.settings()["model_weights"]
    assert method.pretrained and not methods.TrainedConfounderGAN().pretrained


def test_the_budget_is_part_of_the_cache_key():
    for method in (methods.ErrorMinimizingNoise, methods.TargetedAdversarialPoison, methods.TrainedConfounderGAN):
        assert method(budget_seconds=60.0).digest() != method().digest()
        assert method(budget_seconds=60.0).budget_wall_seconds() == pytest.approx(60 / torch.get_num_threads())
        assert method().budget_wall_seconds() is None


def test_markdown_and_figures_are_written(report, folders):
    markdown = (folders["output"] / "results.md").read_text()
    assert "- Wall time: " in markdown and "came from the cache" not in markdown  # a first run makes them all
    for heading in ("## Sanity", "## No defense", "## Defenses, test_resnet",
                    "## Image quality, cost and speed", "## All runs"):
        assert heading in markdown
    assert "python -m training.benchmark --dataset_name" in markdown
    assert ("each with seeds 0: test_resnet (from scratch, 1 epochs, bfloat16 autocast, resnet, **white-box** (the "
            "surrogate's family)); mobilenetv3_small_050 (from scratch, 1 epochs, mobilenetv3, depthwise, held out)"
            ) in markdown
    assert "EM, TAP and the trained generator each get 60 CPU-seconds" in markdown
    assert "`clean` is the victim trained on the unprotected (100 − *N*) % alone" in markdown
    defense_rows = markdown.split("## Defenses, test_resnet")[1].split("\n## ")[0]
    assert f"| defense | {' | '.join(METHODS)} |" in defense_rows and "\n| grayscale | " in defense_rows
    assert ("## Transfer: the noise made with surrogate mobilenetv3_small_050 instead of test_resnet\n\n"
            f"| method | CPU-seconds to make the set | {' | '.join(VICTIMS)} |") in markdown
    assert {Path(path).name for path in report["figures"]} == {
        "curves.png", "samples.png", *(f"defense-{defense}.png" for defense in DEFENSES)}
    for path in report["figures"]:
        with Image.open(path) as figure:
            assert figure.format == "PNG" and min(figure.size) > 100


def test_a_shipped_generator_is_cached_by_its_weights_not_its_path(tmp_path):
    def cache_key(folder: Path) -> str:
        return methods.ConfounderGAN(epsilon=8 / 255, seed=0, model=str(folder)).digest()

    torch.manual_seed(0)
    ConfounderGenerator(num_classes=4, width=8, num_blocks=1).save_pretrained(tmp_path / "first")
    ConfounderGenerator.from_pretrained(tmp_path / "first").save_pretrained(tmp_path / "copy")
    key = cache_key(tmp_path / "first")
    assert cache_key(tmp_path / "copy") == key
    ConfounderGenerator(num_classes=4, width=8, num_blocks=1).save_pretrained(tmp_path / "first")  # new weights
    assert cache_key(tmp_path / "first") != key


def test_a_rerun_only_retrains_victims(dataset, report, folders, tmp_path, monkeypatch):
    def fit_again(*_):
        raise AssertionError("a cached protected training set was made again")

    for method in (methods.ErrorMinimizingNoise, methods.TargetedAdversarialPoison,
                   methods.TrainedConfounderGAN, methods.PatchNoise):
        monkeypatch.setattr(method, "fit", fit_again)
    rerun = runner.main(arguments(dataset, tmp_path, folders["cache"], "--victims", VICTIMS[0],
                                     "--methods", "patch", "em", "tap", "confounder-trained",
                                     "--defenses", "none", "transfer", "--transfer_methods", "tap"))
    assert len(rerun["runs"]) == 5
    text = markdown.format_markdown(rerun)
    assert "No sanity row applies" in text  # no clean run: said, not an empty table
    assert rerun["cached"] == ["patch", "em", "tap", "confounder-trained", "tap-transfer"]
    assert "the protected sets of patch, em, tap, confounder-trained, tap-transfer came from the cache" in text
    for label in ("patch", "em", "tap", "confounder-trained", "tap-transfer"):
        assert rerun["quality"][label] == report["quality"][label]


def test_grayscale_two_class_data_like_pneumoniamnist(tmp_path):
    dataset = tiny_dataset(tmp_path / "gray", mode="L", classes=2, size=28)
    rgb_only = ["confounder-keyed-tuned"]  # fine-tunes the shipped generator, which takes colour images
    report = runner.main(arguments(dataset, tmp_path / "out", tmp_path / "cache", "--victims", "test_resnet",
                                   "--methods", *(method for method in METHODS if method not in rgb_only),
                                   "--defenses", "none", "grayscale", "jpeg10", "transfer",
                                   "--defense_methods", "confounder", "--transfer_methods", "confounder-trained"))
    assert len(report["runs"]) == len(METHODS) - 1 + 3 and report["majority_rate"] == pytest.approx(0.5)
    assert all(0 <= run["auc"] <= 1 and len(run["class_acc"]) == 2 for run in report["runs"])
    assert all(0 < quality["linf_pixels"] <= 8 for quality in report["quality"].values())
    assert "majority-class rate of the test set 50.0%" in (tmp_path / "out" / "results.md").read_text()


def test_time_limit_skips_what_is_left_and_says_so(dataset, tmp_path, monkeypatch):
    spent, real_clock, real_run_cell = [0.0], time.perf_counter, runner.run_cell

    def run_then_spend_an_hour(*args, **kwargs):
        run = real_run_cell(*args, **kwargs)
        spent[0] += 3600
        return run

    monkeypatch.setattr(time, "perf_counter", lambda: real_clock() + spent[0])
    monkeypatch.setattr(runner, "run_cell", run_then_spend_an_hour)
    report = runner.main(arguments(dataset, tmp_path / "out", tmp_path / "cache", "--victims", "test_resnet",
                                      "--methods", "clean", "random", "--defenses", "none", "grayscale",
                                      "--defense_methods", "clean", "--time_limit_minutes", "30"))
    assert [(run["method"], run["defense"]) for run in report["runs"]] == [("clean", "none")]
    assert [(cell["method"], cell["defense"]) for cell in report["skipped"]] == [("clean", "grayscale"),
                                                                                ("random", "none")]
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert ("**Not run** (over `--time_limit_minutes`): clean on test_resnet (grayscale, seed 0), random on "
            "test_resnet (none, seed 0).") in markdown


def test_workers_train_victims_in_their_own_processes(dataset, tmp_path):
    """Two spawned workers: the same cells, reported in the plan's order, and the estimate measured in them."""
    extra = ("--victims", "test_resnet", "--methods", "clean", "random", "--defenses", "none", "grayscale",
             "--defense_methods", "random")
    inline = runner.main(arguments(dataset, tmp_path / "inline", tmp_path / "cache", *extra))
    pooled = runner.main(arguments(dataset, tmp_path / "pooled", tmp_path / "cache", *extra, "--workers", "2"))
    planned = [("clean", "none"), ("random", "none"), ("random", "grayscale")]
    for report in (inline, pooled):
        assert [(run["method"], run["defense"]) for run in report["runs"]] == planned
        assert all(0 <= run["test_acc"] <= 1 and len(run["history"]) == 1 for run in report["runs"])
    assert (inline["workers"], pooled["workers"]) == (1, 2)
    assert pooled["estimate"]["victims_seconds"] > 0
    assert "2 victims train at once" in (tmp_path / "pooled" / "results.md").read_text()


@pytest.mark.parametrize("time_limit, expected", [(None, [("random", 0), ("em", 0)]),
                                                  ("600", [("random", 1), ("em", 0)])])
def test_sets_that_train_a_surrogate_wait_for_running_victims(dataset, tmp_path, monkeypatch, time_limit, expected):
    """Without a time limit every set is made before any victim. With one, each set just before its victims:
    cheap sets beside running victims, a set that trains a surrogate alone (it needs every thread). Two workers,
    simulated in this process: a victim stays running until ``wait`` finishes it."""
    pending, made = [], []

    class DeferredExecutor(Executor):
        def submit(self, fn, /, *args, **kwargs):
            future = Future()
            if fn is runner.train_cell:
                pending.append((future, partial(fn, *args, **kwargs)))
            else:
                future.set_result(fn(*args, **kwargs))
            return future

    def finish_oldest(futures, return_when):
        future, call = pending.pop(0)
        future.set_result(call())
        return {future}, set()

    def open_workers(args, train, validation, test):
        runner.start_worker(torch.get_num_threads(), train, validation, test, args, None)
        return DeferredExecutor()

    real_protect = runner.protect_training_set

    def protect(label, *args):
        made.append((label, len(pending)))
        return real_protect(label, *args)

    monkeypatch.setattr(runner, "open_workers", open_workers)
    monkeypatch.setattr(runner, "wait", finish_oldest)
    monkeypatch.setattr(runner, "protect_training_set", protect)
    report = runner.main(arguments(dataset, tmp_path / "out", tmp_path / "cache", "--victims", "test_resnet",
                                      "--methods", "clean", "random", "em", "--defenses", "none", "grayscale",
                                      "--defense_methods", "clean", "--workers", "2",
                                      *(["--time_limit_minutes", time_limit] if time_limit else [])))
    assert made == expected
    assert [(run["method"], run["defense"]) for run in report["runs"]] == [
        ("clean", "none"), ("random", "none"), ("em", "none"), ("clean", "grayscale")]


def test_estimate_only_trains_nothing(dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(reporting, "train_victim", None)
    result = runner.main(arguments(dataset, tmp_path / "out", tmp_path / "cache",
                                      "--victims", "test_resnet", "--methods", "clean", "em",
                                      "--defenses", "none", "--estimate_only"))
    assert "Estimated time" in capsys.readouterr().out
    assert result["estimate"]["generation_seconds"] > 0 and len(result["cells"]) == 2
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_the_quick_protocol_fits_its_hour():
    """Every headline method, no defense, two held-out victims, three seeds and EM, TAP and the trained generator
    at their CPU budget, within the hour at the throughputs `--estimate_only` measured on the 2-core
    development machine (images/s of both victim workers together; True: bfloat16 autocast)."""
    victims = {("test_byobnet", None, True): 2334, ("test_efficientnet", None, False): 1671}
    args = protocols.parse_args([])
    assert args.victim_epochs == {"test_byobnet": 12, "test_efficientnet": 15}
    assert (args.bf16_victims, args.workers, args.victim_seeds) == (["test_byobnet"], 2, [0, 1, 2])
    assert {"clean", "random", "patch", "em", "tap", "confounder-keyed", "confounder-trained"} == set(args.methods)
    registry = build_defenses(10)
    cells = plan.plan_cells(args.methods, args.victims, args.defenses, args.defense_methods,
                            args.transfer_methods, registry, args.victim_seeds)
    assert len(cells) == 7 * 2 * 3 and {cell.defense for cell in cells} == {"none"}
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the budget is in CPU-seconds: wall seconds on both cores
    try:
        to_generate = {label: method for label, method in runner.build_methods(args, 10).items()
                       if label in args.methods and method.budget_wall_seconds() is not None}
        estimate = plan.estimate_seconds(cells, registry, to_generate, 9_000, 2_000, args.victim_epochs, None,
                                         args.bf16_victims, lambda name, stem, bf16: victims[(name, stem, bf16)],
                                         n_validation=1_000)
    finally:
        torch.set_num_threads(threads)
    assert set(to_generate) == {"em", "tap", "confounder-trained"}
    assert estimate["generation_seconds"] == pytest.approx(3 * args.method_budget / 2)
    assert estimate["total_seconds"] <= 60 * args.budget_minutes <= 60 * 60


def test_the_defense_protocol_puts_every_defense_on_every_method():
    args = protocols.parse_args(["--protocol", "defenses"])
    cells = plan.plan_cells(args.methods, args.victims, args.defenses, args.defense_methods,
                            args.transfer_methods, build_defenses(10), args.victim_seeds)
    assert {(cell.method, cell.defense) for cell in cells} == {(method, defense) for method in args.methods
                                                               for defense in args.defenses}
    assert {"grayscale", "jpeg10", "jpeg75", "cutout", "cutmix", "mixup", "adversarial"} < set(args.defenses)
    assert [cell.seed for cell in cells] == sorted(cell.seed for cell in cells)  # a cut run: whole first seeds


def test_the_full_protocol_plans_every_method_and_defense():
    """The GPU protocol: all the data, every method on every victim, every defense on the first, float32."""
    args = protocols.parse_args(["--protocol", "full"])
    assert (args.train_rows, args.test_rows, args.bf16_victims, args.budget_minutes) == (None, None, [], None)
    registry = build_defenses(10)
    cells = plan.plan_cells(args.methods, args.victims, args.defenses, args.defense_methods,
                                 args.transfer_methods, registry)
    assert {(cell.method, cell.victim) for cell in cells if cell.defense == "none"} == {
        (method, victim) for method in METHODS for victim in args.victims}
    assert {cell.defense for cell in cells if cell.victim == "resnet18"} == set(DEFENSES)


def test_victims_take_their_own_epochs():
    args = protocols.parse_args(["--victims", "test_resnet", "mobilenetv3_small_050:3", "--epochs", "2"])
    assert args.victims == ["test_resnet", "mobilenetv3_small_050"]
    assert args.victim_epochs == {"test_resnet": 2, "mobilenetv3_small_050": 3}
    with pytest.raises(SystemExit):
        protocols.parse_args(["--victims", "test_resnet:ten"])


def test_the_protocols_bf16_victims_apply_to_the_victims_that_run():
    assert protocols.parse_args(["--victims", "test_resnet"]).bf16_victims == []
    assert protocols.parse_args(["--victims", "test_byobnet:3"]).bf16_victims == ["test_byobnet"]


def test_bf16_victims_must_be_victims():
    assert protocols.parse_args(["--bf16_victims"]).bf16_victims == []
    with pytest.raises(SystemExit):
        protocols.parse_args(["--victims", "test_resnet", "--bf16_victims", "mobilenetv3_small_100"])


def test_a_defense_with_nothing_to_run_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        protocols.parse_args(["--methods", "clean", "confounder", "--defenses", "none", "transfer"])
    assert "the transfer defense has nothing to run: give --transfer_methods" in capsys.readouterr().err


def test_estimate_arithmetic():
    registry = build_defenses(10, adversarial_steps=3)
    cells = [plan.Cell("clean", "v", "none", "clean"),
             plan.Cell("clean", "v", "adversarial", "clean")]
    em = methods.ErrorMinimizingNoise(rounds=2, train_steps=1, steps=3, batch_size=10)
    estimate = plan.estimate_seconds(cells, registry, {"em": em}, n_train=100, n_test=30, epochs={"v": 2},
                                          images_per_second=lambda name, stem, bf16: 10.0)
    # victims: 2 epochs × (100 training images × cost 1, then 4 + 30 test images at a third) / 10 images/s
    assert estimate["victims_seconds"] == pytest.approx(2 * 110 / 10 + 2 * 410 / 10)
    # EM: 2 rounds × (1 train step × 10 images + 100 images × (3 PGD steps + 1 check)) / 10 images/s
    assert estimate["generation_seconds"] == pytest.approx(2 * (10 + 400) / 10)
    # With 20 validation images each epoch watches them instead, and the test images are seen once; a budgeted
    # method takes its budget's wall time.
    em.budget_seconds = 30 * torch.get_num_threads()
    estimate = plan.estimate_seconds(cells, registry, {"em": em}, n_train=100, n_test=30, epochs={"v": 2},
                                     images_per_second=lambda name, stem, bf16: 10.0, n_validation=21)
    assert estimate["victims_seconds"] == pytest.approx((2 * 107 + 10) / 10 + (2 * 407 + 10) / 10)
    assert estimate["generation_seconds"] == pytest.approx(30)


def test_a_defense_without_methods_says_what_to_pass():
    registry = build_defenses(10)
    with pytest.raises(ValueError, match="give --defense_methods"):
        plan.plan_cells(["clean", "em"], ["test_resnet"], ["none", "one-class"], ["clean"], ["em"],
                             registry)
    with pytest.raises(ValueError, match="give --transfer_methods"):
        plan.plan_cells(["clean", "em"], ["test_resnet"], ["transfer"], ["clean"], ["tap"], registry)


def synthetic_report(majority_rate: float = 0.1, **accuracies: float) -> dict:
    runs = [{"method": method, "victim": "v", "defense": "none", "test_acc": accuracy}
            for method, accuracy in accuracies.items()]
    # Runs under a defense don't count.
    runs.append({"method": "em", "victim": "v", "defense": "grayscale", "test_acc": 0.9})
    return {"clean_floor": 0.55, "majority_rate": majority_rate, "runs": runs}


def test_sanity_passes_on_a_healthy_report():
    checks = reporting.sanity_checks(synthetic_report(clean=0.70, random=0.65, em=0.30, patch=0.55))
    assert [name for name, _, _ in checks] == [
        "clean v learns", "clean v beats the majority class", "sample-wise random noise barely hurts (v)",
        "EM bites (v)", "LSP-style patch noise bites (v)"]
    assert all(passed for _, passed, _ in checks)


@pytest.mark.parametrize("report, failing", [
    (synthetic_report(clean=0.50, random=0.50, em=0.20, patch=0.20), "clean v learns"),
    (synthetic_report(majority_rate=0.625, clean=0.60), "clean v beats the majority class"),
    (synthetic_report(clean=0.70, random=0.55, em=0.20, patch=0.20),
     "sample-wise random noise barely hurts (v)"),
    (synthetic_report(clean=0.70, random=0.70, em=0.65, patch=0.20), "EM bites (v)"),
    (synthetic_report(clean=0.70, random=0.70, em=0.20, patch=0.62), "LSP-style patch noise bites (v)"),
])
def test_sanity_fails_where_it_should(report, failing):
    checks = reporting.sanity_checks(report, clean_floor=0.55)
    assert [name for name, passed, _ in checks if not passed] == [failing]


def test_sanity_skips_rows_without_runs():
    assert reporting.sanity_checks(synthetic_report(random=0.3, em=0.1)) == []


def test_training_images_protect_the_chosen_part():
    clean = torch.zeros(40, 4, 4, 3, dtype=torch.uint8)
    protected, labels = clean + 1, torch.arange(40) % 4
    registry = build_defenses(4, protected_class=2)
    half, half_labels = registry["partial50"].training_set(clean, protected, labels, seed=0)
    assert (half[:, 0, 0, 0] == 1).sum() == 20 and half_labels is labels
    one_class, _ = registry["one-class"].training_set(clean, protected, labels, seed=0)
    assert torch.equal(one_class[:, 0, 0, 0] == 1, labels == 2)


def test_clean_reference_of_partial_protection_is_the_unprotected_part_alone():
    clean = torch.arange(40, dtype=torch.uint8)[:, None, None, None].expand(40, 4, 4, 3)
    labels = torch.arange(40) % 4
    registry = build_defenses(4, protected_class=2)
    protected_20, _ = registry["partial20"].training_set(clean, clean + 100, labels, seed=0)
    unprotected, unprotected_labels = registry["partial20"].training_set(clean, None, labels, seed=0)
    kept = protected_20[:, 0, 0, 0] < 100  # the images partial20 leaves unprotected
    assert kept.sum() == 32
    assert torch.equal(unprotected, clean[kept]) and torch.equal(unprotected_labels, labels[kept])
    everything, _ = registry["none"].training_set(clean, None, labels, seed=0)
    assert everything is clean


def test_batch_defenses():
    generator = torch.Generator().manual_seed(0)
    images, labels = torch.rand(8, 3, 16, 16), torch.arange(8) % 4
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4))
    cut, targets = cutout(model, images, labels, generator)
    assert targets is labels and 0 < (cut == 0).float().mean() <= 0.25
    for transform in (partial(cutmix, num_classes=4), partial(mixup, num_classes=4)):
        mixed, soft = transform(model, images, labels, generator)
        assert mixed.shape == images.shape and 0 <= mixed.min() and mixed.max() <= 1
        assert soft.shape == (8, 4) and torch.allclose(soft.sum(1), torch.ones(8))
    attacked, targets = adversarial_training(model, images, labels, generator, epsilon=4 / 255, steps=2)
    assert targets is labels and (attacked - images).abs().max() <= 4 / 255 + 1e-6
    assert 0 <= attacked.min() and attacked.max() <= 1 and not torch.equal(attacked, images)
    for transform in (color_jitter, trivial_augment):
        torch.manual_seed(0)
        augmented, targets = transform(model, images, labels, generator)
        assert targets is labels and augmented.shape == images.shape and not torch.equal(augmented, images)
        assert 0 <= augmented.min() and augmented.max() <= 1


def test_per_image_standardisation_removes_a_colour_offset():
    images = torch.rand(4, 3, 8, 8) * 0.5
    offset = torch.tensor([0.2, -0.1, 0.3])[None, :, None, None]
    standardized = Standardize()(images)
    assert torch.allclose(Standardize()(images + offset), standardized, atol=1e-5)
    assert torch.allclose(standardized.mean(dim=(2, 3)), torch.zeros(4, 3), atol=1e-5)


def test_data_defenses():
    images = torch.randint(0, 256, (4, 16, 16, 3), dtype=torch.uint8)
    gray = grayscale(images)
    assert gray.shape == images.shape and torch.equal(gray[..., 0], gray[..., 2])
    squeezed = jpeg(images, quality=10)
    assert squeezed.shape == images.shape and squeezed.dtype == torch.uint8
    assert not torch.equal(squeezed, images)
    checkerboard = ((torch.arange(16)[:, None] + torch.arange(16)) % 2 * 255).to(torch.uint8)
    blurred = downsize(checkerboard[None, :, :, None].expand(1, 16, 16, 3).contiguous())
    assert blurred.shape == (1, 16, 16, 3) and blurred.dtype == torch.uint8
    assert (blurred.int() - 128).abs().max() <= 4  # detail finer than half the side is gone (±127 before)


def test_an_identity_batch_transform_changes_nothing():
    images, labels = torch.randint(0, 256, (32, 16, 16, 3), dtype=torch.uint8), torch.arange(32) % 4
    train = partial(train_victim, "test_resnet", "x", images, labels, images[:8], labels[:8], 4, epochs=1,
                    batch_size=16, progress=False)
    catcher = reporting.ModelCatcher()
    assert train().history == train(batch_transform=catcher).history and catcher.model is not None


def test_roc_auc():
    labels = np.array([0, 0, 1, 1])
    ordered = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
    assert reporting.roc_auc(ordered, labels) == 1.0 and reporting.roc_auc(ordered[::-1], labels) == 0.0
    assert reporting.roc_auc(np.eye(3)[[0, 1, 2, 2]], np.array([0, 1, 2, 2])) == 1.0


def test_speed_summary_takes_the_median_and_range_of_each_number(tmp_path):
    paths = []
    for i, images_per_second in enumerate([3000.0, 4000.0, 2000.0]):
        paths.append(tmp_path / f"run{i}.json")
        paths[-1].write_text(json.dumps({"model": "m", "torch_threads": 2,
                                         "cifar_images_per_second": images_per_second}))
    summary = speed.main(["--summarize", *map(str, paths)])
    assert summary["cifar_images_per_second"] == {"median": 3000.0, "min": 2000.0, "max": 4000.0}
    assert "torch_threads" not in summary


@pytest.mark.parametrize("limit", [["--time_limit_minutes", "9"], ["--time_limit_minutes=9"], ["--time_lim", "9"]])
def test_the_recorded_command_regenerates_the_whole_report(limit):
    args = protocols.parse_args(["--protocol", "defenses", *limit, "--defenses", "none"])
    assert args.time_limit_minutes == 9
    assert args.command == "python -m training.benchmark --protocol defenses --defenses none"


def test_options_override_the_protocol_and_unknown_keys_are_usage_errors(capsys):
    args = protocols.parse_args(["--options", "em_rounds=3", "epsilon=4", "surrogate=mobilenetv3_small_050"])
    assert (args.em_rounds, args.epsilon, args.surrogate, args.tap_steps) == (3, 4.0, "mobilenetv3_small_050", 100)
    assert runner.build_methods(args, 10)["em"].step_size == pytest.approx(2.5 * 4 / 255 / 5)
    for wrong, said in (("em_round=3", "KEY one of seed, epsilon, surrogate"),
                        ("em_rounds=many", "em_rounds takes a value of type int"), ("em_rounds", "expected KEY=VALUE")):
        with pytest.raises(SystemExit):
            protocols.parse_args(["--options", wrong])
        assert said in capsys.readouterr().err


def test_help_has_at_most_25_flags(capsys):
    with pytest.raises(SystemExit):
        protocols.parse_args(["--help"])
    flags = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  -")]
    assert len(flags) <= 25


def test_cells_repeat_per_victim_seed_first_seed_first():
    cells = plan.plan_cells(["clean", "em"], ["a", "b"], ["none"], [], [], build_defenses(10), [3, 1])
    assert [(cell.method, cell.victim, cell.seed) for cell in cells] == [
        ("clean", "a", 3), ("em", "a", 3), ("clean", "b", 3), ("em", "b", 3),
        ("clean", "a", 1), ("em", "a", 1), ("clean", "b", 1), ("em", "b", 1)]


def test_a_stopped_run_resumes_where_it_stopped_and_other_settings_start_afresh(dataset, tmp_path, monkeypatch):
    extra = ("--victims", "test_resnet", "--methods", "clean", "random", "--defenses", "none")
    first = runner.main(arguments(dataset, tmp_path / "out", tmp_path / "cache", *extra))
    stored = json.loads((tmp_path / "out" / "results.json").read_text())
    stored["runs"] = stored["runs"][:1]  # as if stopped after the first victim
    (tmp_path / "out" / "results.json").write_text(json.dumps(stored))
    trained, stored_before = [], []
    real_run_cell = runner.run_cell

    def spy(cell, *args, **kwargs):
        trained.append(cell.method)
        stored_before.append(json.loads((tmp_path / "out" / "results.json").read_text())["runs"])
        return real_run_cell(cell, *args, **kwargs)

    monkeypatch.setattr(runner, "run_cell", spy)
    resumed = runner.main(arguments(dataset, tmp_path / "out", tmp_path / "cache", *extra))
    assert trained == ["random"] and resumed["runs"][0] == first["runs"][0] and resumed["resumed_runs"] == 1
    assert resumed["earlier_seconds"] == pytest.approx(first["seconds"])
    assert "1 victims came from earlier runs of the same settings" in (tmp_path / "out" / "results.md").read_text()
    # a rerun that trains nothing (out of time at once) rewrites the report with every earlier victim in it
    idle = runner.main(arguments(dataset, tmp_path / "out", tmp_path / "cache", *extra, "--time_limit_minutes", "0"))
    assert idle["runs"] == resumed["runs"] and trained == ["random"]
    assert len(json.loads((tmp_path / "out" / "results.json").read_text())["runs"]) == 2
    runner.main(arguments(dataset, tmp_path / "out", tmp_path / "cache", *extra, "--epochs", "3"))
    assert trained == ["random", "clean", "random"]
    # each victim is on disk before the next starts, so a stopped run loses at most the running ones
    assert len(stored_before[-1]) == 1 and len(stored_before[-1][0]["history"]) == 3


def test_adding_a_victim_keeps_the_runs_of_the_others(dataset, tmp_path, monkeypatch):
    extra = ("--methods", "clean", "--defenses", "none")
    runner.main(arguments(dataset, tmp_path / "out", tmp_path / "cache", "--victims", "test_resnet", *extra))
    trained, real_run_cell = [], runner.run_cell
    monkeypatch.setattr(runner, "run_cell", lambda cell, *args, **kwargs: trained.append(cell.victim)
                        or real_run_cell(cell, *args, **kwargs))
    both = runner.main(arguments(dataset, tmp_path / "out", tmp_path / "cache", "--victims", "test_resnet",
                                 "mobilenetv3_small_050:3", *extra))
    assert trained == ["mobilenetv3_small_050"] and both["resumed_runs"] == 1


def test_a_method_whose_protected_set_changed_retrains_its_victims(dataset, tmp_path, monkeypatch):
    extra = ("--methods", "clean", "random", "--defenses", "none", "--victims", "test_resnet")
    runner.main(arguments(dataset, tmp_path / "out", tmp_path / "cache", *extra))
    # new weights of a shipped generator, or new code of a method, change its settings digest but no flag
    settings = methods.UniformNoise.settings
    monkeypatch.setattr(methods.UniformNoise, "settings", lambda self: {**settings(self), "version": 2})
    trained, real_run_cell = [], runner.run_cell
    monkeypatch.setattr(runner, "run_cell", lambda cell, *args, **kwargs: trained.append(cell.method)
                        or real_run_cell(cell, *args, **kwargs))
    again = runner.main(arguments(dataset, tmp_path / "out", tmp_path / "cache", *extra))
    assert trained == ["random"] and again["resumed_runs"] == 1


def test_another_method_budget_retrains_only_the_victims_of_the_methods_it_changes(dataset, tmp_path, monkeypatch):
    extra = ("--methods", "clean", "random", "tap", "--defenses", "none", "--victims", "test_resnet")
    first = runner.main(arguments(dataset, tmp_path / "out", tmp_path / "cache", *extra))
    trained, real_run_cell = [], runner.run_cell
    monkeypatch.setattr(runner, "run_cell", lambda cell, *args, **kwargs: trained.append(cell.method)
                        or real_run_cell(cell, *args, **kwargs))
    again = runner.main(arguments(dataset, tmp_path / "out", tmp_path / "cache", *extra,
                                  "--options", "method_budget=90", "tap_steps=1"))
    assert trained == ["tap"] and again["resumed_runs"] == 2
    assert again["settings_digest"] == first["settings_digest"]


def test_another_method_seed_keeps_the_clean_victims(dataset, tmp_path, monkeypatch):
    extra = ("--methods", "clean", "random", "--defenses", "none", "--victims", "test_resnet")
    runner.main(arguments(dataset, tmp_path / "out", tmp_path / "cache", *extra))
    trained, real_run_cell = [], runner.run_cell
    monkeypatch.setattr(runner, "run_cell", lambda cell, *args, **kwargs: trained.append(cell.method)
                        or real_run_cell(cell, *args, **kwargs))
    runner.main(arguments(dataset, tmp_path / "out", tmp_path / "cache", *extra, "--options", "seed=1", "epsilon=4"))
    assert trained == ["random"]


def test_tables_show_the_mean_and_standard_error_over_seeds():
    assert reporting.mean_and_error([0.1, 0.2, 0.3]) == (pytest.approx(0.2), pytest.approx(0.1 / 3 ** 0.5))
    assert reporting.mean_and_error([0.4]) == (pytest.approx(0.4), None)
    assert markdown.mean_cell([0.1, 0.2, 0.3]) == "20.0% ± 5.8" and markdown.mean_cell([]) == "–"


def test_sanity_judges_the_mean_over_seeds():
    runs = [{"method": method, "victim": "v", "defense": "none", "test_acc": accuracy}
            for method, accuracy in (("clean", 0.7), ("clean", 0.5), ("em", 0.45))]
    checks = reporting.sanity_checks({"runs": runs, "clean_floor": 0.55, "majority_rate": 0.1})
    assert [(name, passed) for name, passed, _ in checks] == [
        ("clean v learns", True), ("clean v beats the majority class", True), ("EM bites (v)", True)]


def test_sanity_does_not_ask_the_known_shortcuts_to_bite_pretrained_victims():
    runs = [{"method": method, "victim": "pretrained_lite0", "defense": "none", "test_acc": accuracy}
            for method, accuracy in (("clean", 0.7), ("random", 0.7), ("em", 0.68), ("patch", 0.69))]
    checks = reporting.sanity_checks({"runs": runs, "clean_floor": 0.55, "majority_rate": 0.1})
    assert [name for name, _, _ in checks] == ["clean pretrained_lite0 learns",
                                               "clean pretrained_lite0 beats the majority class",
                                               "sample-wise random noise barely hurts (pretrained_lite0)"]


def test_victims_are_labelled_white_box_or_held_out():
    found = reporting.victim_architectures(["test_resnet", "test_byobnet", "test_efficientnet"], "test_resnet")
    assert found["test_resnet"] == {"family": "resnet", "depthwise": False, "white_box": True}
    assert found["test_byobnet"] == {"family": "byobnet", "depthwise": False, "white_box": False}
    assert found["test_efficientnet"] == {"family": "efficientnet", "depthwise": True, "white_box": False}


def test_the_report_says_how_each_victim_trains():
    assert [markdown.recipe(victim) for victim in ("test_byobnet", "pretrained_lite0", "pretrained_lite0_probe",
                                                   "hf_convnext")] == [
        "from scratch", "ImageNet-pretrained, fine-tuned", "ImageNet-pretrained, a linear probe",
        "from scratch with the 🤗 Trainer"]


def test_validation_rows_come_from_the_end_of_the_training_rows():
    data = ImageClassificationData(torch.zeros(10, 2, 2, 3, dtype=torch.uint8), torch.arange(10), 10)
    train, validation = data.split_off(3)
    assert train.labels.tolist() == list(range(7)) and validation.labels.tolist() == [7, 8, 9]
    assert data.split_off(0) == (data, None)
    with pytest.raises(ValueError, match="validation_rows=10: give 0"):
        data.split_off(10)


def test_a_cut_run_says_which_seeds_it_has_so_far():
    report = {"victim_seeds": [0, 1, 2], "epochs": {"v": 3}, "surrogate": "test_resnet",
              "runs": [{"method": "clean", "victim": "v", "defense": "none", "seed": 0, "test_acc": 0.5}]}
    assert "each with seeds 0 so far (of 0, 1, 2: the same command resumes the run): v (3 epochs)" in (
        markdown.victim_line(report))
