"""Benchmark: ConfounderGAN against EM, TAP and simple baselines, under the defenses a data scraper would use.

For methods × victims × training settings, one run protects the training set, trains a victim (a timm model,
from scratch) on it and tests the victim on clean test images. It writes ``results.json``, ``results.md``
(tables, sanity rows first) and PNG figures: test accuracy per epoch, a bar chart per setting, and clean /
protected / amplified-noise samples. Every method works within the same L∞ budget ε = 8/255; the methods and
their papers are in ``protection_methods.py``, the defenses in ``defenses.py``.

Protocols set the defaults, and any argument overrides them:
- ``quick`` (2 CPU cores, within an hour): the first 10,000 training and 2,000 test images of CIFAR-10
  (prefixes of ``../shared/data/cifar10`` are class-balanced); victims test_byobnet (12 epochs under bfloat16
  autocast, every setting but adversarial training) and mobilenetv3_small_100 (20 epochs in float32, no
  defense), two at a time; seven methods, and the settings for clean data and the shipped ConfounderGAN
  (see PROTOCOLS for why these);
- ``full`` (a GPU): all 50,000 / 10,000 images; victims ResNet-18, VGG-11, DenseNet-121, MobileNetV2 and
  ViT-S/8, every setting for every method on the first.

    python training/benchmark.py --protocol quick --estimate_only   # the plan and its time, then stop
    python training/benchmark.py --protocol quick --output_dir results/benchmark-quick
    python training/benchmark.py --protocol quick --methods clean random em --defenses none grayscale jpeg10
    python training/benchmark.py --protocol quick --dataset_name ../shared/data/pneumoniamnist \\
        --output_dir results/benchmark-pneumonia

Settings other than ``none`` train the first victim only, on the ``--defense_methods``; ``transfer`` remakes
the ``--transfer_methods`` with ``--transfer_surrogate`` (surrogate A) and trains every victim (B, C) on them.
Under ``partial20/50/80``, ``clean`` is the victim trained on the unprotected images alone, the reference a
partial protection has to match.
Protected training sets are cached in ``--cache_dir`` under a hash of the method's settings and of the exact
training images, so a rerun only retrains victims.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import shlex
import sys
import time
from collections.abc import Callable, Collection
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, replace
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from defenses import adversarial_training, cutmix, cutout, grayscale, jpeg, mixup
from evaluate_unlearnability import image_quality, load_train_and_test, parse_rows
from matplotlib.figure import Figure
from protection_methods import (
    ClasswiseNoise,
    Clean,
    ConfounderGAN,
    ErrorMinimizingNoise,
    Method,
    PatchNoise,
    TargetedAdversarialPoison,
    TrainedConfounderGAN,
    UniformNoise,
)
from scipy.stats import rankdata
from tqdm.auto import tqdm
from victim import as_float, bf16_victims_error, hardware_summary, train_victim

from modeling_confounder import DEFAULT_MODEL
from modeling_confounder.classifiers import create_classifier
from modeling_confounder.data import ImageClassificationData

METHODS = ("clean", "random", "classwise", "patch", "em", "tap", "confounder", "confounder-label-free",
           "confounder-trained")
TRANSFERABLE = ("em", "tap", "confounder-trained")  # the methods with a surrogate to swap
SANITY_MARGIN = 0.10  # "barely hurts" and "bites" are judged against clean accuracy with this margin
SAMPLES = 3  # images per protected set in the samples figure
NEW_IMAGES = 256  # test images protected as "new images" to measure protection speed


@dataclass(frozen=True)
class Setting:
    """How a victim trains: a scraper's defense, or which part of the training set is protected."""

    data_transform: Callable[[torch.Tensor], torch.Tensor] | None = None  # on the uint8 NHWC training images
    on_test_images: bool = False  # the test images too: a model trained on gray images is tested on gray ones
    batch_transform: Callable | None = None  # see train_victim
    cost: float = 1.0  # training time relative to no defense, for the time estimate
    protected_fraction: float = 1.0
    protected_class: int | None = None
    transfer: bool = False  # the method's noise comes from --transfer_surrogate instead of --surrogate

    @property
    def protects_part(self) -> bool:
        """Only part of the data is protected (a random fraction, or one class)."""
        return self.protected_fraction < 1 or self.protected_class is not None


def training_settings(num_classes: int, protected_class: int = 0, adversarial_epsilon: float = 4 / 255,
                      adversarial_steps: int = 3) -> dict[str, Setting]:
    adversarial = partial(adversarial_training, epsilon=adversarial_epsilon, steps=adversarial_steps)
    return {
        "none": Setting(),
        "grayscale": Setting(grayscale, on_test_images=True),
        **{f"jpeg{quality}": Setting(partial(jpeg, quality=quality)) for quality in (10, 50, 75)},
        "cutout": Setting(batch_transform=cutout),
        "cutmix": Setting(batch_transform=partial(cutmix, num_classes=num_classes)),
        "mixup": Setting(batch_transform=partial(mixup, num_classes=num_classes)),
        "adversarial": Setting(batch_transform=adversarial, cost=1 + adversarial_steps),
        **{f"partial{percent}": Setting(protected_fraction=percent / 100) for percent in (20, 50, 80)},
        "one-class": Setting(protected_class=protected_class),
        "transfer": Setting(transfer=True),
    }


DEFENSES = tuple(training_settings(num_classes=2))

# quick: within an hour on 2 CPU cores, every setting on the first victim but adversarial training (which the
# issue leaves to the full protocol when it does not fit: it costs four victims). The first victim is
# test_byobnet: at 12 epochs it learns clean data to 59 % (56.6 % at 10, 61.2 % at 15), and its ConfounderGAN
# results track test_resnet's (results/eval_*.json); with test_resnet, the victim of earlier reports, first, this
# plan is estimated at 66 minutes of victims alone (results/experiments/README.md). MobileNetV3 needs 20 epochs
# to learn (58.8 %; 10 epochs left it at 45 %) and is the victim where ConfounderGAN is weakest, so it stays
# second. Victims train in two 1-thread processes (--workers): 1.6-2.0x the training throughput of one 2-thread
# process for these two; test_byobnet trains under bfloat16 autocast (AVX512-BF16), MobileNetV3 does not,
# since autocast slows its depthwise convolutions. Every other method, setting and victim runs with
# --methods / --defenses / --defense_methods / --victims, and `--estimate_only` prints the time of any plan from
# throughputs measured on the spot before anything runs.
PROTOCOLS = {
    "quick": {"train_rows": (0, 10_000), "test_rows": (0, 2_000), "epochs": 12,
              "victims": ["test_byobnet", "mobilenetv3_small_100:20"], "bf16_victims": ["test_byobnet"],
              "methods": ["clean", "random", "patch", "em", "tap", "confounder", "confounder-trained"],
              "defenses": ["none", "grayscale", "jpeg10", "jpeg75", "cutout", "cutmix", "mixup", "partial20",
                           "partial50", "partial80", "one-class", "transfer"],
              "defense_methods": ["clean", "confounder"], "transfer_methods": ["confounder-trained"],
              "em_rounds": 5, "em_train_steps": 20, "em_steps": 10, "tap_epochs": 5, "tap_steps": 10,
              "confounder_steps": 300, "clean_floor": 0.55, "budget_minutes": 60, "workers": 2},
    "full": {"train_rows": None, "test_rows": None, "epochs": 40, "methods": list(METHODS),
             "victims": ["resnet18", "vgg11", "densenet121", "mobilenetv2_100", "vit_small_patch8_224"],
             "bf16_victims": [],
             "defenses": list(DEFENSES), "defense_methods": list(METHODS),
             "transfer_methods": list(TRANSFERABLE), "em_rounds": 20, "em_train_steps": 10, "em_steps": 20,
             "tap_epochs": 40, "tap_steps": 100, "confounder_steps": 4000, "clean_floor": 0.80,
             "budget_minutes": None, "workers": 1},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocol", choices=PROTOCOLS, default="quick",
                        help="sets the defaults marked (protocol)")
    data = parser.add_argument_group("data")
    data.add_argument("--dataset_name", default="../shared/data/cifar10",
                      help="Hub id, local dataset folder or save_to_disk folder")
    data.add_argument("--image_column_name", default=None)
    data.add_argument("--label_column_name", default=None)
    data.add_argument("--train_split", default="train")
    data.add_argument("--test_split", default="test")
    data.add_argument("--train_rows", type=parse_rows, default=None, metavar="START:STOP", help="(protocol)")
    data.add_argument("--test_rows", type=parse_rows, default=None, metavar="START:STOP", help="(protocol)")
    data.add_argument("--resolution", type=int, default=None, help="resize images to this square size")
    grid = parser.add_argument_group("what to run")
    grid.add_argument("--methods", nargs="+", choices=METHODS, default=None, help="(protocol)")
    grid.add_argument("--defenses", nargs="+", choices=DEFENSES, default=None,
                      help="training settings (protocol)")
    grid.add_argument("--defense_methods", nargs="+", choices=METHODS, default=None,
                      help="methods trained under the settings other than none and transfer (protocol)")
    grid.add_argument("--transfer_methods", nargs="+", choices=TRANSFERABLE, default=None,
                      help="methods remade with --transfer_surrogate for the transfer setting (protocol)")
    grid.add_argument("--victims", nargs="+", default=None, metavar="NAME[:EPOCHS]",
                      help="timm names, each with its own epochs if given (mobilenetv3_small_100:20); the first "
                           "gets every setting (protocol)")
    grid.add_argument("--epochs", type=int, default=None, help="(protocol)")
    grid.add_argument("--bf16_victims", nargs="*", default=None, metavar="NAME",
                      help="victims trained under bfloat16 autocast: about 2x faster for test_resnet on CPUs with "
                           "AVX512-BF16, slower for MobileNetV3; give none for float32 everywhere (protocol)")
    grid.add_argument("--batch_size", type=int, default=128)
    grid.add_argument("--learning_rate", type=float, default=0.05)
    grid.add_argument("--seed", type=int, default=0)
    grid.add_argument("--workers", type=int, default=None,
                      help="victims trained at once, each in its own process with an equal share of the CPU "
                           "threads: small models use 2 CPU cores better as two 1-thread processes than as one "
                           "2-thread process (protocol)")
    grid.add_argument("--estimate_only", action="store_true",
                      help="print the plan and its estimated time, then stop")
    grid.add_argument("--budget_minutes", type=float, default=None,
                      help="warn when the estimate exceeds it (protocol)")
    grid.add_argument("--time_limit_minutes", type=float, default=None,
                      help="start no protected set or victim after this many minutes; the report lists what was "
                           "skipped (for a machine lent for a fixed time)")
    method = parser.add_argument_group("methods and defenses")
    method.add_argument("--epsilon", type=float, default=8,
                        help="L∞ budget of every method, in levels out of 255")
    method.add_argument("--generator", default=DEFAULT_MODEL, help="the generator of 'confounder'")
    method.add_argument("--surrogate", default="test_resnet",
                        help="timm surrogate of em, tap and confounder-trained")
    method.add_argument("--transfer_surrogate", default="mobilenetv3_small_050",
                        help="surrogate A of the transfer setting; the victims are B and C")
    method.add_argument("--em_rounds", type=int, default=None, help="EM outer iterations at most (protocol)")
    method.add_argument("--em_train_steps", type=int, default=None,
                        help="EM surrogate steps per round (protocol)")
    method.add_argument("--em_steps", type=int, default=None, help="EM PGD steps per round (protocol)")
    method.add_argument("--tap_epochs", type=int, default=None,
                        help="TAP surrogate epochs on clean data (protocol)")
    method.add_argument("--tap_steps", type=int, default=None, help="TAP PGD steps (protocol)")
    method.add_argument("--confounder_steps", type=int, default=None,
                        help="training steps of confounder-trained (protocol)")
    method.add_argument("--adversarial_epsilon", type=float, default=4,
                        help="budget of adversarial training, in levels out of 255")
    method.add_argument("--adversarial_steps", type=int, default=3, help="PGD steps of adversarial training")
    method.add_argument("--protected_class", type=int, default=0, help="the class of the one-class setting")
    output = parser.add_argument_group("output")
    output.add_argument("--output_dir", type=Path, default=None, help="default: results/benchmark-PROTOCOL")
    output.add_argument("--cache_dir", type=Path, default=Path("runs/benchmark-cache"),
                        help="protected training sets and trained generators, reused by reruns")
    output.add_argument("--clean_floor", type=float, default=None,
                        help="clean accuracy every victim must reach in the sanity rows (protocol)")
    args = parser.parse_args(argv)
    bf16_given = args.bf16_victims is not None
    for key, value in PROTOCOLS[args.protocol].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.output_dir = args.output_dir or Path(f"results/benchmark-{args.protocol}")
    args.victim_epochs = {}
    for victim in args.victims:
        name, _, epochs = victim.partition(":")
        if epochs and not (epochs.isdigit() and int(epochs) > 0):
            parser.error(f"--victims {victim}: the part after ':' is the victim's epochs, a positive whole number")
        args.victim_epochs[name] = int(epochs) if epochs else args.epochs
    args.victims = list(args.victim_epochs)
    if not bf16_given:  # the protocol's choice, for those of its victims that are running
        args.bf16_victims = [victim for victim in args.bf16_victims if victim in args.victims]
    if error := bf16_victims_error(args.bf16_victims, args.victims):
        parser.error(error)
    if args.workers < 1:
        parser.error(f"--workers {args.workers}: give 1 or more victims to train at once")
    try:  # a plan with an empty setting is a usage error: say so before loading any data
        plan_cells(args.methods, args.victims, args.defenses, args.defense_methods, args.transfer_methods,
                   training_settings(num_classes=2))
    except ValueError as error:
        parser.error(str(error))
    args.command = shlex.join(["python", "training/benchmark.py", *(sys.argv[1:] if argv is None else argv)])
    return args


def build_methods(args: argparse.Namespace, num_classes: int) -> dict[str, Method]:
    epsilon = args.epsilon / 255
    common = {"epsilon": epsilon, "seed": args.seed}
    surrogate = {**common, "num_classes": num_classes, "surrogate": args.surrogate}
    return {
        "clean": Clean(**common),
        "random": UniformNoise(**common),
        "classwise": ClasswiseNoise(**common, num_classes=num_classes),
        "patch": PatchNoise(**common, num_classes=num_classes),
        # PGD steps of 2.5·ε/steps let the noise cross the ε-ball within one call (Madry et al.).
        "em": ErrorMinimizingNoise(**surrogate, rounds=args.em_rounds, train_steps=args.em_train_steps,
                                   steps=args.em_steps, step_size=2.5 * epsilon / args.em_steps),
        "tap": TargetedAdversarialPoison(**surrogate, surrogate_epochs=args.tap_epochs, steps=args.tap_steps,
                                         step_size=2.5 * epsilon / args.tap_steps),
        "confounder": ConfounderGAN(**common, model=args.generator),
        "confounder-label-free": ConfounderGAN(**common, model=args.generator, use_labels=False),
        "confounder-trained": TrainedConfounderGAN(**surrogate, steps=args.confounder_steps,
                                                   output_dir=args.cache_dir),
    }


@dataclass(frozen=True)
class Cell:
    """One victim training; ``variant`` names its protected training set (``em``, or ``em-transfer``)."""

    method: str
    victim: str
    defense: str
    variant: str


def plan_cells(methods: list[str], victims: list[str], defenses: list[str], defense_methods: list[str],
               transfer_methods: list[str], settings: dict[str, Setting]) -> list[Cell]:
    """``none``: every method on every victim. ``transfer``: the ``transfer_methods`` on every victim. Other
    settings: the ``defense_methods`` on the first victim (clean data only where it is the reference)."""
    cells = []
    for defense in defenses:
        setting = settings[defense]
        if defense == "none":
            chosen = [Cell(method, victim, defense, method) for victim in victims for method in methods]
        elif setting.transfer:
            chosen = [Cell(method, victim, defense, f"{method}-transfer") for method in methods
                      if method in transfer_methods for victim in victims]
        else:
            # Under partial protection, clean data means the unprotected part alone (see training_set); there is
            # no such reference for one protected class.
            chosen = [Cell(method, victims[0], defense, method) for method in methods
                      if method in defense_methods and not (setting.protected_class is not None
                                                            and method == "clean")]
        if not chosen:
            wanted = "--transfer_methods" if setting.transfer else "--defense_methods"
            raise ValueError(f"the {defense} setting has nothing to run: give {wanted} a protection method "
                             f"that is also among --methods ({' '.join(methods)})")
        cells += chosen
    return cells


def protected_sets(cells: list[Cell], methods: dict[str, Method], settings: dict[str, Setting],
                   transfer_surrogate: str) -> dict[str, Method]:
    """The method that makes each protected training set the cells need, by variant, in the cells' order."""
    return {cell.variant: replace(methods[cell.method], surrogate=transfer_surrogate)
            if settings[cell.defense].transfer else methods[cell.method] for cell in cells}


def measure_images_per_second(name: str, small_input_stem: bool | None, data: ImageClassificationData,
                              batch_size: int, bf16: bool = False, steps: int = 3,
                              barrier: multiprocessing.synchronize.Barrier | None = None) -> float:
    """Training throughput of a timm model here: forward, backward and an SGD step on random batches.

    With a ``barrier``, timing starts once every worker holding it is ready, so the workers share the CPU as
    they do when they train victims."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    channels, resolution = data.channels, data.images.shape[1]
    model = create_classifier(name, data.num_classes, channels, resolution, small_input_stem)
    model = model.to(device, memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    images = torch.rand(batch_size, channels, resolution, resolution, device=device)
    images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, data.num_classes, (batch_size,), device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()  # waits for the GPU

    for _ in range(2):  # warm-up: the first calls pay for kernel selection and allocation
        step()
    if barrier is not None:
        barrier.wait(timeout=600)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - started)


class InlineExecutor(Executor):
    """An executor that runs each call in this process as it is submitted: the benchmark with ``--workers 1``."""

    def submit(self, fn: Callable, /, *args, **kwargs) -> Future:
        future = Future()
        future.set_result(fn(*args, **kwargs))
        return future


WORKER: dict = {}  # what a victim-training process holds: the data, the run's arguments, the timing barrier


def start_worker(threads: int, train: ImageClassificationData, test: ImageClassificationData,
                 args: argparse.Namespace, barrier: multiprocessing.synchronize.Barrier | None) -> None:
    torch.set_num_threads(threads)
    WORKER.update(train=train, test=test, args=args, barrier=barrier)


def open_workers(args: argparse.Namespace, train: ImageClassificationData,
                 test: ImageClassificationData) -> Executor:
    """``args.workers`` processes that train victims, each with an equal share of this process's threads."""
    if args.workers == 1:
        start_worker(torch.get_num_threads(), train, test, args, None)
        return InlineExecutor()
    # Spawned, not forked: forking a process whose OpenMP threads have already run can deadlock.
    context = multiprocessing.get_context("spawn")
    threads = max(1, torch.get_num_threads() // args.workers)
    return ProcessPoolExecutor(args.workers, mp_context=context, initializer=start_worker,
                               initargs=(threads, train, test, args, context.Barrier(args.workers)))


def train_cell(cell: Cell, setting: Setting, protected_path: Path | None) -> dict:
    """``run_cell`` in a worker: the protected training set comes from the cache file (None: clean data)."""
    train = WORKER["train"]
    protected = None if protected_path is None else PerturbationCache.read(protected_path, train.images)[0]
    args = WORKER["args"]
    return run_cell(cell, setting, protected, train, WORKER["test"], args, progress=args.workers == 1)


def measure_in_worker(name: str, small_input_stem: bool | None, bf16: bool) -> float:
    return measure_images_per_second(name, small_input_stem, WORKER["train"], WORKER["args"].batch_size, bf16,
                                     barrier=WORKER["barrier"])


class Throughput:
    """Training images per second of timm models on this machine, each (name, stem, bf16) measured once: in
    this process, as protected sets are made, or in all the victim workers at once (their sum)."""

    def __init__(self, data: ImageClassificationData, batch_size: int, workers: Executor | None = None,
                 count: int = 1) -> None:
        self.data, self.batch_size, self.workers, self.count = data, batch_size, workers, count
        self.measured: dict[tuple[str, bool | None, bool, int], float] = {}

    def __call__(self, name: str, small_input_stem: bool | None, bf16: bool = False) -> float:
        key = (name, small_input_stem, bf16, 1)
        if key not in self.measured:
            self.measured[key] = measure_images_per_second(name, small_input_stem, self.data, self.batch_size,
                                                           bf16)
        return self.measured[key]

    def victims(self, name: str, small_input_stem: bool | None, bf16: bool = False) -> float:
        if self.count == 1:
            return self(name, small_input_stem, bf16)
        key = (name, small_input_stem, bf16, self.count)
        if key not in self.measured:
            # One measurement per worker, all timed together: a worker waits at the barrier until the others
            # arrive, so no worker can take two of them.
            futures = [self.workers.submit(measure_in_worker, name, small_input_stem, bf16)
                       for _ in range(self.count)]
            self.measured[key] = sum(future.result() for future in futures)
        return self.measured[key]


def estimate_seconds(cells: list[Cell], settings: dict[str, Setting], to_generate: dict[str, Method],
                     n_train: int, n_test: int, epochs: dict[str, int],
                     images_per_second: Callable[[str, bool | None, bool], float],
                     bf16_victims: Collection[str] = (),
                     victim_images_per_second: Callable[[str, bool | None, bool], float] | None = None,
                     ) -> dict[str, float]:
    """Time of a plan from training throughputs (images/s of a timm name with a stem and a bf16 choice; for
    victims, of all the workers together when they differ).

    A victim epoch trains on every training image (times the setting's cost) and tests on every test image,
    which costs about a third as much. Making a protected set costs its method's surrogate work; methods
    without one (noise, a shipped generator) take seconds.
    """
    def train_share(cell: Cell) -> float:  # clean data under partial protection: the unprotected part only
        setting = settings[cell.defense]
        return 1 - setting.protected_fraction if cell.method == "clean" and setting.protects_part else 1

    victim_images_per_second = victim_images_per_second or images_per_second
    victims = sum(epochs[cell.victim] * (n_train * train_share(cell) * settings[cell.defense].cost + n_test / 3)
                  / victim_images_per_second(cell.victim, None, cell.victim in bf16_victims) for cell in cells)
    works = [work for method in to_generate.values() if (work := method.work(n_train))]
    generation = sum(work.passes / images_per_second(work.model, work.small_input_stem, False) for work in works)
    return {"victims_seconds": victims, "generation_seconds": generation,
            "total_seconds": victims + generation}


class PerturbationCache:
    """Protected training sets on disk as int8 noise, keyed by the method's settings and the training data.

    Code is not part of the key: after changing how a method works, delete its files from the cache.
    """

    def __init__(self, folder: Path, data: ImageClassificationData) -> None:
        self.folder = Path(folder)
        digest = hashlib.sha256(data.images.numpy().tobytes())
        digest.update(data.labels.numpy().tobytes())
        self.fingerprint = digest.hexdigest()

    def path(self, label: str, method: Method) -> Path:
        key = hashlib.sha256((method.digest() + self.fingerprint).encode()).hexdigest()[:16]
        return self.folder / f"{label}-{key}.npz"

    def load(self, label: str, method: Method, clean: torch.Tensor) -> tuple[torch.Tensor, dict] | None:
        path = self.path(label, method)
        return self.read(path, clean) if path.exists() else None

    @staticmethod
    def read(path: Path, clean: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The protected training set stored at ``path`` for the ``clean`` images, and its info."""
        with np.load(path) as stored:
            noise = torch.from_numpy(stored["noise"])
            info = json.loads(str(stored["info"]))
        return (clean.to(torch.int16) + noise).to(torch.uint8), info

    def save(self, label: str, method: Method, clean: torch.Tensor, protected: torch.Tensor,
             info: dict) -> None:
        path = self.path(label, method)
        path.parent.mkdir(parents=True, exist_ok=True)
        unfinished = path.with_name(path.stem + ".partial.npz")  # renamed once complete: never half a file
        noise = (protected.to(torch.int16) - clean.to(torch.int16)).to(torch.int8).numpy()
        np.savez_compressed(unfinished, noise=noise, info=np.array(json.dumps(info, default=str)))
        unfinished.replace(path)


def protect_training_set(label: str, method: Method, train: ImageClassificationData,
                         new: ImageClassificationData, cache: PerturbationCache) -> tuple[torch.Tensor, dict]:
    """The protected training set (from the cache, or made and cached) and its quality and speed."""
    cached = cache.load(label, method, train.images)
    if cached is not None:
        print(f"{label}: protected training set from {cache.path(label, method)}", flush=True)
        return cached
    print(f"{label}: protecting {len(train.labels)} training images", flush=True)
    started = time.perf_counter()
    protected = method.fit(train.images, train.labels)
    generate_seconds = time.perf_counter() - started
    started = time.perf_counter()
    method.perturb(new.images, new.labels)
    images_per_second = len(new.labels) / (time.perf_counter() - started)
    quality = image_quality(train.images.numpy(), protected.numpy())
    levels = round(method.epsilon * 255)
    if quality["linf_pixels"] > levels:
        raise RuntimeError(f"{label} changed a pixel by {quality['linf_pixels']} levels, more than ε = "
                           f"{levels}/255 allows: a bug in {type(method).__name__}")
    info = {"generate_seconds": generate_seconds, "images_per_second": images_per_second,
            "quality": quality, "settings": method.settings()}
    cache.save(label, method, train.images, protected, info)
    return protected, info


class ModelCatcher:
    """A batch transform that keeps the model it is called with: ``train_victim`` returns numbers only, and
    the benchmark also needs class probabilities (per-class accuracy, AUC) from the trained model."""

    def __init__(self, transform: Callable | None = None) -> None:
        self.transform = transform
        self.model: torch.nn.Module | None = None

    def __call__(self, model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        self.model = model
        if self.transform is None:
            return images, labels
        return self.transform(model, images, labels, generator)


@torch.inference_mode()
def predict(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 500) -> np.ndarray:
    """Class probabilities for uint8 NHWC images."""
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([model(as_float(images[start:start + batch_size], device)).softmax(1).float().cpu()
                      for start in range(0, len(images), batch_size)]).numpy()


def roc_auc(probabilities: np.ndarray, labels: np.ndarray) -> float | None:
    """ROC AUC by the Mann–Whitney rank statistic: of class 1 for two classes, else the one-vs-rest mean."""
    classes = [1] if probabilities.shape[1] == 2 else range(probabilities.shape[1])
    scores = []
    for k in classes:
        positive = labels == k
        positives, negatives = positive.sum(), (~positive).sum()
        if positives and negatives:
            ranks = rankdata(probabilities[:, k])
            scores.append((ranks[positive].sum() - positives * (positives + 1) / 2) / (positives * negatives))
    return float(np.mean(scores)) if scores else None


def training_set(setting: Setting, clean: torch.Tensor, protected: torch.Tensor | None, labels: torch.Tensor,
                 seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The victim's training images and labels: protected where the setting protects (all, a random fraction,
    one class).

    ``protected=None`` (clean data) under partial protection keeps only the images that stay unprotected: the
    reference for partial protection is what a victim learns from the clean part alone, so that a protection
    that works leaves the victim no better than that (Huang et al., ICLR 2021, section 4.2).
    """
    if setting.protected_class is not None:
        mask = labels == setting.protected_class
    else:
        mask = torch.zeros(len(labels), dtype=torch.bool)
        chosen = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
        mask[chosen[:round(setting.protected_fraction * len(labels))]] = True
    if protected is None:
        images, labels = (clean[~mask], labels[~mask]) if setting.protects_part else (clean, labels)
    else:
        images = torch.where(mask[:, None, None, None], protected, clean)
    return (images if setting.data_transform is None else setting.data_transform(images)), labels


def run_cell(cell: Cell, setting: Setting, protected: torch.Tensor | None, train: ImageClassificationData,
             test: ImageClassificationData, args: argparse.Namespace, progress: bool = True) -> dict:
    """Trains and tests one victim; ``protected`` is the method's training set, None for clean data."""
    images, labels = training_set(setting, train.images, protected, train.labels, args.seed)
    test_images = setting.data_transform(test.images) if setting.on_test_images else test.images
    catcher = ModelCatcher(setting.batch_transform)
    result = train_victim(cell.victim, f"{cell.method}/{cell.defense}", images, labels, test_images,
                          test.labels, train.num_classes, args.victim_epochs[cell.victim], args.batch_size,
                          args.learning_rate, args.seed, progress=progress, batch_transform=catcher,
                          bf16=cell.victim in args.bf16_victims)
    probabilities = predict(catcher.model, test_images)
    test_labels = test.labels.numpy()
    correct = probabilities.argmax(1) == test_labels
    class_acc = [float(correct[test_labels == k].mean()) if (test_labels == k).any() else None
                 for k in range(train.num_classes)]
    run = {"method": cell.method, "victim": cell.victim, "defense": cell.defense, "test_acc": result.test_acc,
           "best_test_acc": result.best_test_acc, "seconds": result.seconds, "train_acc": result.train_acc,
           "history": result.history, "auc": roc_auc(probabilities, test_labels), "class_acc": class_acc,
           "n_train": len(labels), "bf16": result.bf16}
    if setting.protected_class is not None:
        others = test_labels != setting.protected_class
        run.update(protected_class=setting.protected_class,
                   protected_class_acc=class_acc[setting.protected_class],
                   other_classes_acc=float(correct[others].mean()))
    if setting.transfer:
        run["surrogate"] = args.transfer_surrogate
    return run


def sanity_checks(report: dict, clean_floor: float | None = None) -> list[tuple[str, bool, str]]:
    """The rows that make a report trustworthy, as (name, passed, detail), from the runs without defense.

    For every victim with a clean run: it learns (≥ ``clean_floor``, default ``report["clean_floor"]``, and
    above the majority-class rate); sample-wise random noise barely hurts (at most ``SANITY_MARGIN`` below
    clean); the known shortcuts, EM and LSP-style patches, bite (at least ``SANITY_MARGIN`` below clean).
    Rows whose runs are missing are left out.
    """
    floor = report["clean_floor"] if clean_floor is None else clean_floor
    accuracy = {(run["method"], run["victim"]): run["test_acc"] for run in report["runs"]
                if run["defense"] == "none"}
    checks = []
    for victim in dict.fromkeys(run["victim"] for run in report["runs"]):
        clean = accuracy.get(("clean", victim))
        if clean is None:
            continue
        checks.append((f"clean {victim} learns", clean >= floor, f"{clean:.1%} (needs ≥ {floor:.0%})"))
        if report.get("majority_rate") is not None:
            checks.append((f"clean {victim} beats the majority class", clean > report["majority_rate"],
                           f"{clean:.1%} vs {report['majority_rate']:.1%}"))
        for method, name, bites in (("random", "sample-wise random noise barely hurts", False),
                                    ("em", "EM bites", True), ("patch", "LSP-style patch noise bites", True)):
            if (method, victim) in accuracy:
                drop = clean - accuracy[(method, victim)]
                passed = drop >= SANITY_MARGIN if bites else drop <= SANITY_MARGIN
                needs = f"needs {'≥' if bites else '≤'} {SANITY_MARGIN * 100:.0f} points lower"
                checks.append((f"{name} ({victim})", passed,
                               f"{accuracy[(method, victim)]:.1%} vs clean {clean:.1%} ({needs})"))
    return checks


def package_versions() -> dict[str, str]:
    names = ("confounder-gan", "torch", "timm", "diffusers", "accelerate", "datasets", "numpy",
             "scikit-image", "pillow", "matplotlib")
    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:  # importable from a checkout without being installed
            return "not installed"

    return {"python": sys.version.split()[0], **{name: installed(name) for name in names}}


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows), ""]


def percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def protected_class(run: dict) -> str:
    if "protected_class" not in run:
        return "–"
    return (f"{percent(run['protected_class_acc'])} (class {run['protected_class']}; "
            f"others {percent(run['other_classes_acc'])})")


def wall_time(report: dict) -> str:
    text = (f"{report['seconds'] / 60:.0f} min (estimated at the start: "
            f"{report['estimate']['total_seconds'] / 60:.0f} min)")
    if cached := report.get("cached"):  # reports from before this field cannot tell
        minutes = sum(report["speed"][label]["generate_seconds"] for label in cached) / 60
        text += (f"; the protected sets of {', '.join(cached)} came from the cache, so the {minutes:.1f} min "
                 "it took to make them (their `generate_seconds`) are not in it")
    return text


def skipped_line(report: dict) -> list[str]:
    """The planned victims that --time_limit_minutes left out, as a list item (none: no line)."""
    skipped = report.get("skipped")
    if not skipped:
        return []
    cells = ", ".join(f"{cell['method']} on {cell['victim']} ({cell['defense']})" for cell in skipped)
    return [f"- **Not run** (over `--time_limit_minutes`): {cells}."]


def format_markdown(report: dict) -> str:
    runs = report["runs"]
    victims = list(dict.fromkeys(run["victim"] for run in runs))
    methods = list(dict.fromkeys(run["method"] for run in runs))
    defenses = list(dict.fromkeys(run["defense"] for run in runs))
    by_cell = {(run["method"], run["victim"], run["defense"]): run for run in runs}

    def cell(method: str, victim: str, defense: str) -> str:
        run = by_cell.get((method, victim, defense))
        return "–" if run is None else f"{run['test_acc']:.1%} ({run['best_test_acc']:.1%})"

    versions = ", ".join(f"{name} {value}" for name, value in report["versions"].items())
    data = (f"`{report['dataset']}`, {report['n_train']} training and {report['n_test']} test images, "
            f"{report['num_classes']} classes; majority-class rate of the test set "
            f"{percent(report['majority_rate'])}")
    bf16 = set(report.get("bf16_victims", []))  # reports from before the option trained in float32
    epochs = ", ".join(f"{victim} {count}{' (bfloat16 autocast)' if victim in bf16 else ''}"
                       for victim, count in report["epochs"].items())
    victims_train = (f"Victims train from scratch with crop + flip, epochs: {epochs}; accuracy "
                     "is on clean test images, final (best epoch)")
    if report.get("workers", 1) > 1:
        victims_train += (f"; {report['workers']} victims train at once, each in its own process with an equal "
                          "share of the threads")
    lines = [f"# Unlearnable-example benchmark, {report['protocol']} protocol", "",
             f"Regenerate with `{report['command']}`.", "", f"- Data: {data}.",
             f"- Every method within ε = {report['epsilon_levels']}/255 (L∞). {victims_train}.",
             f"- Hardware: {report['hardware']}.", f"- Versions: {versions}.",
             f"- Wall time: {wall_time(report)}.", *skipped_line(report), "",
             "## Sanity", ""]
    checks = sanity_checks(report)
    if checks:
        lines += ["If a row fails, fix the harness before reading anything else from this report.", "",
                  *table(["check", "result", "detail"],
                         [[name, "pass" if passed else "**FAIL**", detail] for name, passed, detail in checks])]
    else:
        lines += [("No sanity row applies: they need the clean method without defense. Include `clean` in "
                   "`--methods` and `none` in `--defenses` before trusting this report."), ""]
    if "none" in defenses:
        lines += ["## No defense", "",
                  *table(["method", *victims],
                         [[method, *(cell(method, victim, "none") for victim in victims)]
                          for method in methods])]
    lines += [f"## Training settings, {victims[0]}", ""]
    if any(run["method"] == "clean" and run["defense"].startswith("partial") for run in runs):
        lines += [("Under partial*N*, `clean` is the victim trained on the unprotected (100 − *N*) % alone: a "
                   "protection works there when its row is no better than that one."), ""]
    lines += table(["method", *defenses],
                   [[method, *(cell(method, victims[0], defense) for defense in defenses)] for method in methods])
    transfer = [run for run in runs if run["defense"] == "transfer"]
    if transfer:
        own = f" instead of {report['surrogate']}" if "surrogate" in report else ""
        lines += [f"## Transfer: the noise made with surrogate {transfer[0]['surrogate']}{own}", "",
                  *table(["method", *victims],
                         [[method, *(cell(method, victim, "transfer") for victim in victims)]
                          for method in dict.fromkeys(run["method"] for run in transfer)])]
    if report["quality"]:
        lines += ["## Image quality and speed", "",
                  *table(["protected set", "PSNR", "SSIM", "max abs δ", "protect the training set",
                          "protect new images"],
                         [[label, f"{quality['psnr']:.1f} dB", f"{quality['ssim']:.3f}",
                           f"{quality['linf_pixels']}/255",
                           f"{report['speed'][label]['generate_seconds']:.1f} s",
                           f"{report['speed'][label]['images_per_second']:.0f} images/s"]
                          for label, quality in report["quality"].items()])]
    lines += ["## All runs", "",
              *table(["method", "victim", "defense", "test acc", "best", "train acc", "AUC",
                      "protected class acc", "seconds"],
                     [[run["method"], run["victim"], run["defense"], percent(run["test_acc"]),
                       percent(run["best_test_acc"]), percent(run["train_acc"]),
                       "–" if run["auc"] is None else f"{run['auc']:.3f}", protected_class(run),
                       f"{run['seconds']:.0f}"] for run in runs])]
    return "\n".join(lines)


def write_figures(report: dict, clean: torch.Tensor, protected: dict[str, torch.Tensor],
                  folder: Path) -> list[Path]:
    """Accuracy curves (no defense), a bar chart per setting, and clean / protected / amplified-noise
    samples."""
    runs, paths = report["runs"], []
    victims = list(dict.fromkeys(run["victim"] for run in runs))

    curves = [run for run in runs if run["defense"] == "none"]
    if curves:
        figure = Figure(figsize=(5 * len(victims), 3.5), layout="constrained")
        for axis, victim in zip(figure.subplots(1, len(victims), squeeze=False)[0], victims):
            for run in (run for run in curves if run["victim"] == victim):
                is_clean = run["method"] == "clean"
                axis.plot(range(1, len(run["history"]) + 1), run["history"], marker=".", label=run["method"],
                          linestyle="--" if is_clean else "-", color="black" if is_clean else None)
            axis.set(title=f"{victim}, no defense", xlabel="epoch", ylabel="clean test accuracy", ylim=(0, 1))
            axis.legend(fontsize="small")
        paths.append(folder / "curves.png")
        figure.savefig(paths[-1], dpi=120)

    first_clean = ("clean", victims[0], "none")
    reference = next((run["test_acc"] for run in runs
                      if (run["method"], run["victim"], run["defense"]) == first_clean), None)
    for defense in dict.fromkeys(run["defense"] for run in runs):
        chosen = [run for run in runs if run["defense"] == defense]
        several = len({run["victim"] for run in chosen}) > 1
        figure = Figure(figsize=(max(4.0, 0.7 * len(chosen) + 1.5), 3.5), layout="constrained")
        axis = figure.subplots()
        axis.bar([f"{run['method']}\n{run['victim']}" if several else run["method"] for run in chosen],
                 [run["test_acc"] for run in chosen], color="tab:blue")
        if reference is not None:
            axis.axhline(reference, color="black", linestyle="--", label=f"clean, no defense ({victims[0]})")
            axis.legend(fontsize="small")
        axis.set(title=f"setting: {defense}", ylabel="clean test accuracy", ylim=(0, 1))
        axis.tick_params(axis="x", labelrotation=45, labelsize="small")
        paths.append(folder / f"defense-{defense}.png")
        figure.savefig(paths[-1], dpi=120)

    if protected:
        levels = report["epsilon_levels"]
        figure = Figure(figsize=(3.6 * SAMPLES, 1.3 * len(protected)), layout="constrained")
        axes = figure.subplots(len(protected), 3 * SAMPLES, squeeze=False)
        for row, (label, images) in zip(axes, protected.items()):
            for index in range(min(SAMPLES, len(images))):
                noise = (images[index].float() - clean[index].float()) / (2 * levels) + 0.5  # ±ε → [0, 1]
                shown = (clean[index].float() / 255, images[index].float() / 255, noise)
                for axis, image, title in zip(row[3 * index:3 * index + 3], shown,
                                              ("clean", label, "noise, amplified")):
                    axis.imshow(image.clamp(0, 1).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
                    axis.set_title(title, fontsize=7)
            for axis in row:
                axis.set_axis_off()
        paths.append(folder / "samples.png")
        figure.savefig(paths[-1], dpi=120)
    return paths


def print_plan(args: argparse.Namespace, cells: list[Cell], variants: dict[str, Method],
               to_generate: dict[str, Method], n_train: int, estimate: dict[str, float],
               throughput: Throughput) -> None:
    per_victim = ", ".join(f"{victim}: {sum(cell.victim == victim for cell in cells)} of "
                           f"{args.victim_epochs[victim]} epochs" for victim in args.victims)
    measured = ", ".join(f"{name}{'' if stem is None else ' (strided)'}{' bf16' if bf16 else ''}"
                         f"{f' in {count} workers' if count > 1 else ''} {value:.0f}"
                         for (name, stem, bf16, count), value in throughput.measured.items())
    print(f"Plan: {len(cells)} victims on {n_train} images ({per_victim}); "
          f"{len(to_generate)} of {len(variants)} protected sets to make, the others cached or clean.\n"
          f"Estimated time: {estimate['total_seconds'] / 60:.0f} min (victims "
          f"{estimate['victims_seconds'] / 60:.0f} min, protection {estimate['generation_seconds'] / 60:.0f} "
          f"min), from training throughputs measured now, in images/s: {measured}", flush=True)
    if args.budget_minutes and estimate["total_seconds"] > 60 * args.budget_minutes:
        print(f"WARNING: over the {args.protocol} protocol's budget of {args.budget_minutes:.0f} min: run a "
              "subset (--methods, --defenses, --defense_methods, --victims) or fewer --epochs", flush=True)


def main(argv: list[str] | None = None) -> dict:
    started = time.perf_counter()
    args = parse_args(argv)
    train, test = load_train_and_test(args)
    if not 0 <= args.protected_class < train.num_classes:
        raise ValueError(f"--protected_class {args.protected_class} is not a class of {args.dataset_name} "
                         f"(0..{train.num_classes - 1})")
    settings = training_settings(train.num_classes, args.protected_class, args.adversarial_epsilon / 255,
                                 args.adversarial_steps)
    cells = plan_cells(args.methods, args.victims, args.defenses, args.defense_methods, args.transfer_methods,
                       settings)
    methods = build_methods(args, train.num_classes)
    variants = protected_sets(cells, methods, settings, args.transfer_surrogate)
    cache = PerturbationCache(args.cache_dir, train)
    to_generate = {label: method for label, method in variants.items()
                   if not isinstance(method, Clean) and not cache.path(label, method).exists()}
    workers = open_workers(args, train, test)
    with workers:
        throughput = Throughput(train, args.batch_size, workers, args.workers)
        estimate = estimate_seconds(cells, settings, to_generate, len(train.labels), len(test.labels),
                                    args.victim_epochs, throughput, args.bf16_victims, throughput.victims)
        print_plan(args, cells, variants, to_generate, len(train.labels), estimate, throughput)
        if args.estimate_only:
            return {"estimate": estimate, "cells": [asdict(cell) for cell in cells]}
        return run_plan(args, started, cells, settings, variants, to_generate, cache, train, test, estimate,
                        workers)


def run_plan(args: argparse.Namespace, started: float, cells: list[Cell], settings: dict[str, Setting],
             variants: dict[str, Method], to_generate: dict[str, Method], cache: PerturbationCache,
             train: ImageClassificationData, test: ImageClassificationData, estimate: dict[str, float],
             workers: Executor) -> dict:
    """Makes (or reads) each protected set and trains its victims, ``args.workers`` at a time; writes the report
    after each victim, then the tables and figures."""
    test_labels = test.labels.numpy()
    report = {"protocol": args.protocol, "dataset": args.dataset_name, "train_rows": args.train_rows,
              "test_rows": args.test_rows, "n_train": len(train.labels), "n_test": len(test.labels),
              "num_classes": train.num_classes,
              "majority_rate": float(np.bincount(test_labels).max() / len(test_labels)),
              "epsilon": args.epsilon / 255, "epsilon_levels": round(args.epsilon),
              "epochs": args.victim_epochs, "bf16_victims": args.bf16_victims,
              "victims": args.victims, "workers": args.workers, "hardware": hardware_summary(),
              "versions": package_versions(),
              "command": args.command, "clean_floor": args.clean_floor, "estimate": estimate,
              "surrogate": args.surrogate,
              "cached": [label for label, method in variants.items()
                         if not isinstance(method, Clean) and label not in to_generate],
              "runs": [], "skipped": [], "quality": {}, "speed": {}}
    args.output_dir.mkdir(parents=True, exist_ok=True)
    results_json = args.output_dir / "results.json"
    new = ImageClassificationData(test.images[:NEW_IMAGES], test.labels[:NEW_IMAGES], test.num_classes)
    samples: dict[str, torch.Tensor] = {}
    def out_of_time() -> bool:
        return args.time_limit_minutes is not None and time.perf_counter() - started > 60 * args.time_limit_minutes

    protected_paths: dict[str, Path | None] = {}  # the cache file of each set made so far (None: clean data)

    def make(label: str) -> None:
        method = variants[label]
        protected_paths[label] = None
        if not isinstance(method, Clean):
            protected, info = protect_training_set(label, method, train, new, cache)
            report["quality"][label] = info["quality"]
            report["speed"][label] = {key: info[key] for key in ("generate_seconds", "images_per_second")}
            samples[label] = protected[:SAMPLES].clone()  # not a view, so that the whole set can be freed
            protected_paths[label] = cache.path(label, method)

    # Without a time limit every protected set is made first, so that no victim waits while a surrogate trains.
    # With one, each set is made just before its victims, so a cut run still has the cheap methods' victims;
    # a set that trains a surrogate then waits until no victim is running, since it needs every thread.
    labels = list(variants)
    waiting = list(enumerate(cells))
    if args.time_limit_minutes is None:
        for label in labels:
            make(label)
    else:
        waiting.sort(key=lambda item: labels.index(item[1].variant))
    running: dict[Future, tuple[int, Cell]] = {}
    finished: dict[int, dict] = {}
    bar = tqdm(total=len(cells), desc=f"victims, {args.workers} at a time", unit="victim",
               disable=args.workers == 1)
    while waiting or running:
        while waiting and len(running) < args.workers:
            index, cell = waiting[0]
            label = cell.variant
            if out_of_time():
                report["skipped"].append(asdict(waiting.pop(0)[1]))
                bar.update()
                continue
            if label not in protected_paths:
                if running and label in to_generate and variants[label].work(len(train.labels)) is not None:
                    break
                make(label)
            waiting.pop(0)
            future = workers.submit(train_cell, cell, settings[cell.defense], protected_paths[label])
            running[future] = index, cell
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in done:
            index, cell = running.pop(future)
            run = finished[index] = future.result()
            bar.update()
            tqdm.write(f"{cell.victim:24s} {cell.method:22s} {cell.defense:11s} test {run['test_acc']:6.1%} "
                       f"(best {run['best_test_acc']:6.1%}) train {run['train_acc']:6.1%}  "
                       f"{run['seconds']:5.0f}s")
            report["runs"] = [finished[index] for index in sorted(finished)]  # in the plan's order
            results_json.write_text(json.dumps(report, indent=2))  # after every run: partial results survive
    bar.close()

    report["seconds"] = time.perf_counter() - started
    report["sanity"] = [{"name": name, "passed": passed, "detail": detail}
                        for name, passed, detail in sanity_checks(report)]
    markdown = format_markdown(report)
    (args.output_dir / "results.md").write_text(markdown + "\n")
    figures = write_figures(report, train.images[:SAMPLES], samples, args.output_dir)
    report["figures"] = [str(path) for path in figures]
    results_json.write_text(json.dumps(report, indent=2))
    print(markdown)
    return report


if __name__ == "__main__":
    main()
