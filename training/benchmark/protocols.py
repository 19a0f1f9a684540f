"""The benchmark's protocols (the defaults of a run) and its command line.

A protocol sets every value a flag or an ``--options KEY=VALUE`` leaves out. All three hold out the last
``validation_rows`` training rows as clean validation images (they choose settings; the test rows only report)
and train every victim with three seeds:
- ``quick`` (2 CPU cores, within an hour, the headline): training rows 25,000–34,999 of CIFAR-10, which the
  shipped generators never saw (they trained on rows 0–24,999; the rows are class-balanced, and the last 1,000
  validate), and the first 2,000 test rows; victims of
  two families that the surrogate (test_resnet, a ResNet) is not: test_byobnet (12 epochs under bfloat16
  autocast) and the depthwise test_efficientnet (15 epochs), two at a time, each in a 1-thread process; seven
  methods without defense; EM, TAP and the generator trained in the run get the same CPU budget.
- ``defenses`` (2 CPU cores, about an hour per victim seed, resumable): the same data and methods, every
  scraper defense on test_byobnet.
- ``pretrained`` (2 CPU cores, about an hour): the same data and methods on a larger victim, the
  ImageNet-pretrained EfficientNet-Lite0 fine-tuned for 5 epochs at 64 px (``training.pretrained``; 76 % on the
  validation rows in the probe of ``docs/experiments.md``).
- ``clothing`` (2 CPU cores, about an hour per victim seed, resumable): real phone photos (``shared/data/clothing``,
  10 classes, unbalanced, so balanced accuracy), validated on the dataset's own validation split. Every method
  makes its noise at 80 px on the photos' centre squares; the owners publish the full photos with it and the
  scraper resizes them back to 80 px (``training.photos``) and trains on random resized crops. Victims: from
  scratch test_byobnet and test_efficientnet (timm's strided stems at 80 px), the pretrained EfficientNet-Lite0
  fine-tuned and as a linear probe on its frozen features, and a small 🤗 transformers ConvNeXt trained with the
  ``Trainer`` (``training.victim.train_with_trainer``); colour jitter and TrivialAugment on the first. Epochs and
  the Trainer's learning rate were chosen on the validation split (``docs/benchmark.md``).
- ``full`` (a GPU): all 50,000 / 10,000 images; victims ResNet-18 (white-box: the surrogate's family),
  VGG-11, DenseNet-121, MobileNetV2 and ViT-S/8, every defense for every method on the first.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from modeling_confounder import CIFAR10_MODEL
from training.data import add_data_arguments
from training.defenses import DEFENSES, Defense, build_defenses
from training.methods import METHODS, TRANSFERABLE
from training.transformers_models import TRANSFORMERS_VICTIMS
from training.victim import bf16_victims_error

from .plan import plan_cells

# KEY: (type, what it sets), for --options KEY=VALUE.
OPTIONS: dict[str, tuple[type, str]] = {
    "seed": (int, "seed of every method: its noise, surrogate, generator and the keyed generator's secret"),
    "epsilon": (float, "L∞ budget of every method, in levels out of 255"),
    "surrogate": (str, "timm surrogate of em, tap and confounder-trained"),
    "transfer_surrogate": (str, "surrogate A of the transfer defense (the victims are B and C)"),
    "em_rounds": (int, "EM outer iterations at most"),
    "em_train_steps": (int, "EM surrogate steps per round"),
    "em_steps": (int, "EM PGD steps per round"),
    "tap_epochs": (int, "TAP surrogate epochs on clean data (at most, under a budget)"),
    "tap_steps": (int, "TAP PGD steps (at most, under a budget)"),
    "confounder_steps": (int, "training steps of confounder-trained's generator (at most, under a budget)"),
    "adversarial_epsilon": (float, "budget of adversarial training, in levels out of 255"),
    "adversarial_steps": (int, "PGD steps of adversarial training"),
    "method_budget": (float, "CPU-seconds that em, tap and confounder-trained may each spend"),
    "validation_rows": (int, "the last training rows that become clean validation images instead"),
    "validation_split": (str, "a split of clean validation images (instead of validation_rows)"),
    "photos": (int, "1: protected sets go through the full-size photos their owners publish (training.photos)"),
    "crop_scale": (float, ("victims train on random resized crops of at least this share of the area (none: no "
                           "such crop; torchvision's default for the Trainer's victims)")),
    "pretrained_learning_rate": (float, "peak learning rate of the pretrained victims (none: learning_rate)"),
    "balanced": (int, "1: tables and sanity rows use balanced accuracy (the mean per-class recall)"),
    "protected_class": (int, "the class that the one-class defense protects"),
    "batch_size": (int, "victim batch size"),
    "learning_rate": (float, "victim peak learning rate (SGD, one-cycle)"),
    "clean_floor": (float, "clean test accuracy every victim must reach in the sanity rows"),
    "budget_minutes": (float, "warn when the estimated time exceeds this many minutes"),
}

# The options that only set how the methods make their protected sets: each victim run's ``protected_set`` digest
# (the method's settings) covers them, so a benchmark's settings digest leaves them out.
METHOD_OPTIONS = ("seed", "epsilon", "surrogate", "transfer_surrogate", "em_rounds", "em_train_steps", "em_steps",
                  "tap_epochs", "tap_steps", "confounder_steps", "method_budget")

COMMON = {"dataset_name": "../shared/data/cifar10", "epsilon": 8, "surrogate": "test_resnet",
          "transfer_surrogate": "mobilenetv3_small_050", "adversarial_epsilon": 4, "adversarial_steps": 3,
          "protected_class": 0, "batch_size": 128, "learning_rate": 0.05,
          "seed": 0, "victim_seeds": [0, 1, 2]}
QUICK_DATA = {**COMMON, "train_rows": (25_000, 35_000), "validation_rows": 1_000, "test_rows": (0, 2_000),
              "methods": ["clean", "random", "patch", "em", "tap", "confounder-keyed", "confounder-trained"],
              "transfer_methods": ["confounder-trained"], "bf16_victims": ["test_byobnet"], "epochs": 12,
              "method_budget": 420.0, "em_rounds": 10, "em_train_steps": 20, "em_steps": 5, "tap_epochs": 10,
              "tap_steps": 100, "confounder_steps": 3000, "clean_floor": 0.55, "workers": 2}
PROTOCOLS = {
    "quick": {**QUICK_DATA, "victims": ["test_byobnet", "test_efficientnet:15"], "defenses": ["none"],
              "defense_methods": [], "budget_minutes": 60},
    "defenses": {**QUICK_DATA, "victims": ["test_byobnet"],
                 "defenses": ["none", "standardize", "color-jitter", "trivial-augment", "downsize", "grayscale",
                              "jpeg75", "jpeg10", "cutout", "cutmix", "mixup", "adversarial"],
                 "defense_methods": QUICK_DATA["methods"], "budget_minutes": None},
    "pretrained": {**QUICK_DATA, "victims": ["pretrained_lite0:5"], "defenses": ["none"], "defense_methods": [],
                   "pretrained_learning_rate": 0.02, "clean_floor": 0.70, "budget_minutes": None},
    "clothing": {**COMMON, "dataset_name": "../shared/data/clothing", "train_rows": None, "validation_rows": 0,
                 "validation_split": "validation", "test_rows": None, "resolution": 80, "photos": 1,
                 "crop_scale": 0.35, "balanced": 1, "methods": QUICK_DATA["methods"], "transfer_methods": [],
                 "victims": ["test_byobnet:30", "test_efficientnet:30", "pretrained_lite0:6",
                             "pretrained_lite0_probe:5", "hf_convnext:20"], "epochs": 30,
                 "bf16_victims": ["test_byobnet"],
                 "defenses": ["none", "color-jitter", "trivial-augment"], "defense_methods": QUICK_DATA["methods"],
                 "method_budget": 420.0, "em_rounds": 10, "em_train_steps": 20, "em_steps": 5, "tap_epochs": 10,
                 "tap_steps": 100, "confounder_steps": 3000, "pretrained_learning_rate": 0.02,
                 "clean_floor": 0.25, "workers": 2, "budget_minutes": None},
    "full": {**COMMON, "train_rows": None, "validation_rows": 5_000, "test_rows": None, "epochs": 40,
             "methods": list(METHODS), "victims": ["resnet18", "vgg11", "densenet121", "mobilenetv2_100",
                                                  "vit_small_patch8_224"],
             "bf16_victims": [], "defenses": list(DEFENSES), "defense_methods": list(METHODS),
             "transfer_methods": list(TRANSFERABLE), "method_budget": None, "em_rounds": 20,
             "em_train_steps": 10, "em_steps": 20, "tap_epochs": 40, "tap_steps": 250, "confounder_steps": 4000,
             "clean_floor": 0.80, "budget_minutes": None, "workers": 1},
}


def parse_option(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` of ``--options``, the value converted to the key's type."""
    key, equals, value = text.partition("=")
    if key not in OPTIONS or not equals:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE with KEY one of {', '.join(OPTIONS)}")
    kind = OPTIONS[key][0]
    try:
        return key, kind(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: {key} takes a value of type {kind.__name__}") from None


def options_help() -> str:
    """The epilog of ``--help``: every option key, what it sets and each protocol's value."""
    width = max(map(len, OPTIONS))
    lines = ["options (--options KEY=VALUE ...), with the quick / full protocol's value:"]
    for key, (_, meaning) in OPTIONS.items():
        quick, full = (str(PROTOCOLS[protocol].get(key)).replace("None", "none") for protocol in ("quick", "full"))
        lines.append(f"  {key:{width}}  {meaning}: {quick if quick == full else f'{quick} / {full}'}")
    return "\n".join(lines)


def build_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.benchmark", description=description,
                                     epilog=options_help(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", choices=PROTOCOLS, default="quick",
                        help="the defaults of every value marked (protocol) and of --options")
    add_data_arguments(parser)
    for action in parser._actions:  # the protocol names the dataset, so the flag is optional here
        if action.dest == "dataset_name":
            action.required, action.default, action.help = False, None, action.help + " (protocol)"
    grid = parser.add_argument_group("what to run")
    grid.add_argument("--methods", nargs="+", choices=METHODS, metavar="METHOD",
                      help=f"protection methods: {', '.join(METHODS)} (protocol)")
    grid.add_argument("--defenses", nargs="+", choices=DEFENSES, metavar="DEFENSE",
                      help=f"defenses victims train under: {', '.join(DEFENSES)} (protocol)")
    grid.add_argument("--defense_methods", nargs="+", choices=METHODS, metavar="METHOD",
                      help="methods trained under the defenses other than none and transfer (protocol)")
    grid.add_argument("--transfer_methods", nargs="+", choices=TRANSFERABLE, metavar="METHOD",
                      help=f"methods remade with the transfer surrogate for the transfer defense: "
                           f"{', '.join(TRANSFERABLE)} (protocol)")
    grid.add_argument("--victims", nargs="+", metavar="NAME[:EPOCHS]",
                      help="timm victims, each with its own epochs if given (mobilenetv3_small_100:20); the "
                           "first trains under every defense (protocol)")
    grid.add_argument("--epochs", type=int, help="epochs of the victims given without their own (protocol)")
    grid.add_argument("--bf16_victims", nargs="*", metavar="NAME",
                      help="victims trained under bfloat16 autocast (faster on CPUs with AVX512-BF16 for most "
                           "convolutional models, slower for MobileNetV3); give none for float32 everywhere "
                           "(protocol: its choice for those of its victims that run)")
    grid.add_argument("--workers", type=int,
                      help="victims trained at once, each in its own process with an equal share of the CPU "
                           "threads (protocol)")
    grid.add_argument("--victim_seeds", type=int, nargs="+", metavar="SEED",
                      help="each victim trains once per seed; tables show the mean ± standard error (protocol)")
    grid.add_argument("--model", default=CIFAR10_MODEL,
                      help="the generator of confounder and confounder-label-free: a folder or Hub id")
    grid.add_argument("--options", nargs="+", action="extend", type=parse_option, default=[], metavar="KEY=VALUE",
                      help="method, defense and victim settings, the keys listed below (repeated: the last wins)")
    run = parser.add_argument_group("running")
    run.add_argument("--estimate_only", action="store_true", help="print the plan and its estimated time, then stop")
    run.add_argument("--time_limit_minutes", type=float,
                     help="start no protected set or victim after this many minutes; the report lists what was "
                          "skipped")
    run.add_argument("--output_dir", type=Path, help="where the report goes (default: results/benchmark-PROTOCOL)")
    run.add_argument("--cache_dir", type=Path, default=Path("runs/benchmark-cache"),
                     help="protected training sets and trained generators, reused by reruns")
    return parser


def victim_epochs(victims: list[str], epochs: int) -> dict[str, int]:
    """``NAME[:EPOCHS]`` specs as {name: epochs}; ``epochs`` for those without their own."""
    chosen = {}
    for victim in victims:
        name, _, own = victim.partition(":")
        if own and not (own.isdigit() and int(own) > 0):
            raise ValueError(f"--victims {victim}: the part after ':' is the victim's epochs, a positive whole "
                             "number")
        chosen[name] = int(own) if own else epochs
    return chosen


def transformers_victims_error(args: argparse.Namespace, registry: dict[str, Defense]) -> str | None:
    """What the Trainer cannot do that the plan asks of a transformers victim (a batch defense of ``registry``,
    bfloat16), or None."""
    chosen = [victim for victim in args.victims if victim in TRANSFORMERS_VICTIMS]
    if set(chosen) & set(args.bf16_victims):
        return f"--bf16_victims: {' '.join(chosen)} train with the Trainer in float32; leave them out"
    batch_defenses = [name for name in args.defenses
                      if registry[name].batch_transform is not None or registry[name].input_layer is not None]
    if args.victims[0] in TRANSFORMERS_VICTIMS and batch_defenses:
        return (f"--victims: the first victim trains under every defense, but {args.victims[0]} trains with the "
                f"Trainer, which has no place for {' '.join(batch_defenses)}: put a timm victim first")
    return None


def complete(args: argparse.Namespace, argv: list[str] | None) -> None:
    """Fills in the protocol's defaults and the options, checks the plan and records the command; raises
    ``ValueError`` for a usage error."""
    bf16_given = args.bf16_victims is not None
    for key, value in PROTOCOLS[args.protocol].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    for key, value in args.options:
        setattr(args, key, value)
    for key in OPTIONS:  # the options a protocol leaves unset are None
        setattr(args, key, getattr(args, key, None))
    args.output_dir = args.output_dir or Path(f"results/benchmark-{args.protocol}")
    args.victim_epochs = victim_epochs(args.victims, args.epochs)
    args.victims = list(args.victim_epochs)
    if not bf16_given:  # the protocol's choice, for those of its victims that are running
        args.bf16_victims = [victim for victim in args.bf16_victims if victim in args.victims]
    if error := bf16_victims_error(args.bf16_victims, args.victims):
        raise ValueError(error)
    registry = build_defenses(num_classes=2)  # which defenses exist and what they do, not their settings
    if error := transformers_victims_error(args, registry):
        raise ValueError(error)
    if args.workers < 1:
        raise ValueError(f"--workers {args.workers}: give 1 or more victims to train at once")
    # A plan with a defense that runs nothing is a usage error: said before any data loads.
    plan_cells(args.methods, args.victims, args.defenses, args.defense_methods, args.transfer_methods,
               registry, args.victim_seeds)
    args.command = shlex.join(["python", "-m", "training.benchmark", *regenerating(sys.argv[1:] if argv is None
                                                                                  else argv)])


def regenerating(argv: list[str]) -> list[str]:
    """``argv`` without ``--time_limit_minutes``, which only stops a run early: the rest regenerates the report."""
    kept, skip = [], False
    for argument in argv:
        flag, equals, _ = argument.partition("=")
        limit = flag.startswith("--ti") and "--time_limit_minutes".startswith(flag)  # argparse takes prefixes
        if not (skip or limit):
            kept.append(argument)
        skip = limit and not equals
    return kept


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser("Benchmark: ConfounderGAN against EM, TAP and simple baselines, under the defenses a "
                          "data scraper would use (see training/benchmark/__init__.py).")
    args = parser.parse_args(argv)
    try:
        complete(args, argv)
    except ValueError as error:
        parser.error(str(error))
    return args
