"""Many owners: does each owner's noise give a shortcut of its own, one a classifier tells apart from the others?

Every training image gets a random owner (its content has nothing to do with the owner) and is protected with that
owner's key; a victim trained from scratch learns to name the owner, then names the owners of *new* images
protected with the same keys. Near 100 % means every key is a separable shortcut: a scraper who labels photos by
person learns the keys, not the faces. A label generator has only its owner codes, so owners share them (owner
``o`` gets code ``o mod num_classes``, as a code drawn at random does on average), which caps what a victim can
tell apart. Keys come from a secret fixed by the seed (``owner_secret``), new to the generator.

    python -m training.owners --dataset_name ../shared/data/cifar10 --model modeling_confounder/keyed_model \
        --owners 100 --train_rows 0:10000 --test_rows 0:2000 --victims test_byobnet --bf16_victims test_byobnet \
        --epochs 12 --seeds 0 1 2 --output_json results/owners-keyed.json
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

from modeling_confounder import DEFAULT_MODEL, ConfounderGenerator
from modeling_confounder.pipeline import is_keyed, protect

from .data import add_data_arguments, load_train_and_test
from .models import weights_digest
from .victim import add_victim_arguments, bf16_victims_error, hardware_summary, record_run, train_victim


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_arguments(parser)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="the generator (folder or Hub id)")
    parser.add_argument("--owners", type=int, default=100, help="how many owners share the images")
    add_victim_arguments(parser, ["test_byobnet"])
    parser.add_argument("--output_json", type=Path, default=Path("results/owners.json"),
                        help="the report, rewritten after each victim")
    args = parser.parse_args(argv)
    if error := bf16_victims_error(args.bf16_victims, args.victims):
        parser.error(error)
    if args.owners < 2:
        parser.error(f"--owners must be at least 2, got {args.owners}")
    args.command = shlex.join(["python", "-m", "training.owners", *(sys.argv[1:] if argv is None else argv)])
    return args


def owner_secret(seed: int) -> str:
    """The secret each owner's key is derived from (with the owner's number) for seed ``seed``."""
    return f"owners secret {seed}"


def random_owners(count: int, owners: int, seed: int) -> torch.Tensor:
    """An owner for each of ``count`` images, uniform and independent of what they show."""
    return torch.randint(0, owners, (count,), generator=torch.Generator().manual_seed(seed))


def protect_by_owner(generator: ConfounderGenerator, images: torch.Tensor, owners: torch.Tensor,
                     seed: int) -> torch.Tensor:
    """Each image protected with its owner's key, or with its owner's code for a label generator."""
    if is_keyed(generator):
        protected = protect(generator, images.numpy(), labels=owners.tolist(), key=owner_secret(seed))
    else:
        codes = (owners % generator.config.num_classes).tolist()
        protected = protect(generator, images.numpy(), labels=codes)
    return torch.from_numpy(protected)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    train, test = load_train_and_test(args)
    generator = ConfounderGenerator.from_pretrained(args.model)
    report = {"dataset": args.dataset_name, "train_rows": args.train_rows, "test_rows": args.test_rows,
              "owners": args.owners, "generator": str(args.model), "generator_weights": weights_digest(generator),
              "keyed": is_keyed(generator), "epochs": args.epochs, "hardware": hardware_summary(),
              "command": args.command, "runs": []}
    for seed in args.seeds:
        train_owners = random_owners(len(train.labels), args.owners, seed)
        test_owners = random_owners(len(test.labels), args.owners, seed + 1_000_003)
        protected_train = protect_by_owner(generator, train.images, train_owners, seed)
        protected_test = protect_by_owner(generator, test.images, test_owners, seed)
        for victim in args.victims:
            result = train_victim(victim, f"{args.owners} owners", protected_train, train_owners, protected_test,
                                  test_owners, args.owners, args.epochs, args.batch_size, args.learning_rate, seed,
                                  bf16=victim in args.bf16_victims)
            record_run(report, result, seed, args.output_json)
            print(f"{victim:24s} seed {seed} names the owner of new images: {result.test_acc:6.1%}", flush=True)
    print(format_table(report))
    return report


def format_table(report: dict) -> str:
    """Per victim: the accuracy of naming the owner of new images, each seed and mean ± standard error."""
    lines = ["| victim | generator | owners | seeds | owner named, each seed | mean | standard error |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for victim in dict.fromkeys(run["victim"] for run in report["runs"]):
        accuracies = [run["test_acc"] for run in report["runs"] if run["victim"] == victim]
        error = f"{statistics.stdev(accuracies) / len(accuracies) ** 0.5:.1%}" if len(accuracies) > 1 else "–"
        lines.append(f"| {victim} | {Path(report['generator']).name} | {report['owners']} | {len(accuracies)} | "
                     f"{' / '.join(f'{value:.1%}' for value in accuracies)} | {np.mean(accuracies):.1%} | {error} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
