"""Running a benchmark plan: protected sets made or read from the cache, victims trained in worker processes."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import multiprocessing.synchronize
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from training.data import ImageClassificationData, load_classification_data, load_train_and_test
from training.defenses import Defense, build_defenses
from training.methods import METHODS, Clean, Method, create_method
from training.photos import Photos
from training.victim import protection_quality

from .cache import PerturbationCache
from .figures import SAMPLES, write_figures
from .markdown import format_markdown
from .plan import Cell, describe_plan, estimate_seconds, measure_images_per_second, plan_cells, protected_sets
from .protocols import parse_args
from .report import new_report, run_cell, same_training, sanity_checks, settings_digest

NEW_IMAGES = 256  # test images protected as "new images" to measure protection speed


class InlineExecutor(Executor):
    """An executor that runs each call in this process as it is submitted: the benchmark with ``--workers 1``."""

    def submit(self, fn: Callable, /, *args, **kwargs) -> Future:
        future = Future()
        future.set_result(fn(*args, **kwargs))
        return future


# What a victim-training process holds: the data, the run's arguments, the timing barrier. A process pool's
# initializer can only hand its process state through a global; the data then crosses to each worker once,
# not with every victim.
WORKER: dict = {}


def start_worker(threads: int, train: ImageClassificationData, validation: ImageClassificationData | None,
                 test: ImageClassificationData, args: argparse.Namespace,
                 barrier: multiprocessing.synchronize.Barrier | None) -> None:
    torch.set_num_threads(threads)
    WORKER.update(train=train, validation=validation, test=test, args=args, barrier=barrier)


def open_workers(args: argparse.Namespace, train: ImageClassificationData,
                 validation: ImageClassificationData | None, test: ImageClassificationData) -> Executor:
    """``args.workers`` processes that train victims, each with an equal share of this process's threads."""
    if args.workers == 1:
        start_worker(torch.get_num_threads(), train, validation, test, args, None)
        return InlineExecutor()
    # Spawned, not forked: forking a process whose OpenMP threads have already run can deadlock.
    context = multiprocessing.get_context("spawn")
    threads = max(1, torch.get_num_threads() // args.workers)
    return ProcessPoolExecutor(args.workers, mp_context=context, initializer=start_worker,
                               initargs=(threads, train, validation, test, args, context.Barrier(args.workers)))


def train_cell(cell: Cell, defense: Defense, protected_path: Path | None) -> dict:
    """``run_cell`` in a worker: the protected training set comes from the cache file (None: clean data)."""
    train = WORKER["train"]
    protected = None if protected_path is None else PerturbationCache.read(protected_path, train.images)[0]
    args = WORKER["args"]
    return run_cell(cell, defense, protected, train, WORKER["validation"], WORKER["test"], args,
                    progress=args.workers == 1)


def measure_in_worker(name: str, small_input_stem: bool | None, bf16: bool) -> float:
    return measure_images_per_second(name, small_input_stem, WORKER["train"], WORKER["args"].batch_size, bf16,
                                     barrier=WORKER["barrier"])


class MeasuredThroughput:
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


def protect_training_set(label: str, method: Method, train: ImageClassificationData,
                         new: ImageClassificationData, cache: PerturbationCache,
                         photos: Photos | None = None) -> tuple[torch.Tensor, dict]:
    """The protected training set (from the cache, or made and cached), its quality, its speed and what it
    cost: ``cpu_seconds`` is this process's CPU time (all its threads) while the method made the set, surrogate
    or generator training included. With ``photos`` the set is what a scraper takes from the full photos their
    owners published with the method's noise (``Photos.round_trip``), and ε is checked on those photos."""
    cached = cache.load(label, method, train.images)
    if cached is not None:
        print(f"{label}: protected training set from {cache.path(label, method)}", flush=True)
        return cached
    print(f"{label}: protecting {len(train.labels)} training images", flush=True)
    started, cpu_started = time.perf_counter(), time.process_time()
    protected = method.fit(train.images, train.labels)
    generate_seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    started = time.perf_counter()
    method.perturb(new.images, new.labels)
    images_per_second = len(new.labels) / (time.perf_counter() - started)
    published = None
    if photos is not None:
        protected, published = photos.round_trip(train.images, protected)
    quality = protection_quality(train.images.numpy(), protected.numpy())
    levels, changed = round(method.epsilon * 255), (published or quality)["linf_pixels"]
    if changed > levels:
        raise RuntimeError(f"{label} changed a pixel by {changed} levels, more than ε = {levels}/255 allows: a "
                           f"bug in {type(method).__name__}")
    info = {"generate_seconds": generate_seconds, "cpu_seconds": cpu_seconds, "threads": torch.get_num_threads(),
            "images_per_second": images_per_second, "quality": quality, "published_photos": published,
            "settings": method.settings()}
    cache.save(label, method, train.images, protected, info)
    return protected, info


def run_key(cell: Cell | dict) -> tuple:
    """What identifies a victim run across reruns: method, victim, defense, seed."""
    if isinstance(cell, Cell):
        return cell.method, cell.victim, cell.defense, cell.seed
    return cell["method"], cell["victim"], cell["defense"], cell.get("seed", 0)


def earlier_report(results_json: Path, settings_digest: str) -> dict:
    """The report at ``results_json`` if it was made with the same settings (else an empty one), so that a
    stopped or cut run goes on where it stopped."""
    if not results_json.exists():
        return {}
    earlier = json.loads(results_json.read_text())
    if earlier.get("settings_digest") != settings_digest:
        print(f"{results_json} holds a run with other settings: starting afresh over it", flush=True)
        return {}
    return earlier


def reusable_runs(runs: list[dict], cells: list[Cell], variants: dict[str, Method],
                  args: argparse.Namespace) -> dict[tuple, dict]:
    """The earlier ``runs`` that a rerun keeps, by ``run_key``: those of a planned cell whose victim trained as
    ``args`` would (``same_training``) on the same protected set (the method's settings digest, which covers a
    shipped generator's weights), so that new weights or settings retrain a method's victims."""
    earlier = {run_key(run): run for run in runs if same_training(run, args)}
    digests = {label: method.digest() for label, method in variants.items()}
    return {run_key(cell): earlier[run_key(cell)] for cell in cells if run_key(cell) in earlier
            and earlier[run_key(cell)].get("protected_set") == digests[cell.variant]}


class PlanRun:
    """Makes (or reads) each protected set and trains its victims, ``args.workers`` at a time; writes the
    report after each victim, then the tables and figures.

    Without a time limit every protected set is made first, so that no victim waits while a surrogate trains.
    With one, victims run seed by seed and each set is made just before its victims, so a cut run still has its
    first seeds and the cheap methods' victims; a set that trains a surrogate then waits until no victim is
    running, since it needs every thread.
    """

    def __init__(self, args: argparse.Namespace, started: float, cells: list[Cell], defenses: dict[str, Defense],
                 variants: dict[str, Method], to_generate: dict[str, Method], cache: PerturbationCache,
                 train: ImageClassificationData, test: ImageClassificationData, workers: Executor,
                 report: dict, done: dict[tuple, dict] | None = None, photos: Photos | None = None) -> None:
        self.args, self.started, self.defenses, self.variants, self.photos = args, started, defenses, variants, photos
        self.to_generate, self.cache, self.train, self.workers, self.report = to_generate, cache, train, workers, report
        self.new = ImageClassificationData(test.images[:NEW_IMAGES], test.labels[:NEW_IMAGES], test.num_classes)
        self.samples: dict[str, torch.Tensor] = {}
        self.protected_paths: dict[str, Path | None] = {}  # the cache file of each set made (None: clean data)
        self.digests = {label: method.digest() for label, method in variants.items()}  # stored with each run
        done = done or {}
        self.finished = {index: done[run_key(cell)] for index, cell in enumerate(cells) if run_key(cell) in done}
        self.waiting = [(index, cell) for index, cell in enumerate(cells) if index not in self.finished]
        report["resumed_runs"] = len(self.finished)
        report["runs"] = [self.finished[index] for index in sorted(self.finished)]  # kept even if none is added
        self.running: dict[Future, tuple[int, Cell]] = {}
        self.results_json = args.output_dir / "results.json"
        self.bar = tqdm(total=len(cells), initial=len(self.finished), desc=f"victims, {args.workers} at a time",
                        unit="victim", disable=args.workers == 1)

    def out_of_time(self) -> bool:
        limit = self.args.time_limit_minutes
        return limit is not None and time.perf_counter() - self.started > 60 * limit

    def make(self, label: str) -> None:
        method = self.variants[label]
        self.protected_paths[label] = None
        if not isinstance(method, Clean):
            protected, info = protect_training_set(label, method, self.train, self.new, self.cache, self.photos)
            self.report["quality"][label] = {**info["quality"], "published_photos": info.get("published_photos")}
            self.report["speed"][label] = {key: info.get(key) for key in ("generate_seconds", "cpu_seconds",
                                                                          "images_per_second")}
            self.report["speed"][label]["pretrained"] = method.pretrained
            self.samples[label] = protected[:SAMPLES].clone()  # not a view, so that the whole set can be freed
            self.protected_paths[label] = self.cache.path(label, method)

    def must_wait(self, label: str) -> bool:
        """Whether making ``label``'s set has to wait for the running victims: it trains a surrogate."""
        return (label not in self.protected_paths and bool(self.running) and label in self.to_generate
                and self.variants[label].work(len(self.train.labels)) is not None)

    def start_next(self) -> bool:
        """Starts the first waiting victim (or skips it when out of time); False when it has to wait."""
        index, cell = self.waiting[0]
        if self.out_of_time():
            self.report["skipped"].append(asdict(self.waiting.pop(0)[1]))
            self.bar.update()
            return True
        if self.must_wait(cell.variant):
            return False
        if cell.variant not in self.protected_paths:
            self.make(cell.variant)
        self.waiting.pop(0)
        future = self.workers.submit(train_cell, cell, self.defenses[cell.defense],
                                     self.protected_paths[cell.variant])
        self.running[future] = index, cell
        return True

    def collect(self) -> None:
        """Waits for a running victim to finish and records it (and every other that finished)."""
        done, _ = wait(self.running, return_when=FIRST_COMPLETED)
        for future in done:
            index, cell = self.running.pop(future)
            run = self.finished[index] = {**future.result(), "protected_set": self.digests[cell.variant]}
            self.bar.update()
            tqdm.write(f"{cell.victim:20s} {cell.method:20s} {cell.defense:11s} seed {cell.seed} "
                       f"test {run['test_acc']:6.1%} train {run['train_acc']:6.1%}  {run['seconds']:5.0f}s")
            self.report["runs"] = [self.finished[index] for index in sorted(self.finished)]  # the plan's order
            self.report["seconds"] = time.perf_counter() - self.started  # so far: a cut run keeps it
            self.results_json.write_text(json.dumps(self.report, indent=2))  # partial results survive

    def run(self) -> dict:
        self.args.output_dir.mkdir(parents=True, exist_ok=True)
        labels = list(self.variants)
        if self.args.time_limit_minutes is None:
            for label in labels:
                self.make(label)
        else:
            self.waiting.sort(key=lambda item: (item[1].seed, labels.index(item[1].variant)))  # seed by seed
        while self.waiting or self.running:
            while self.waiting and len(self.running) < self.args.workers and self.start_next():
                pass
            if self.running:
                self.collect()
        self.bar.close()
        return self.finish()

    def finish(self) -> dict:
        report = self.report
        report["seconds"] = time.perf_counter() - self.started
        report["sanity"] = [{"name": name, "passed": passed, "detail": detail}
                            for name, passed, detail in sanity_checks(report)]
        markdown = format_markdown(report)
        (self.args.output_dir / "results.md").write_text(markdown + "\n")
        figures = write_figures(report, self.train.images[:SAMPLES], self.samples, self.args.output_dir)
        report["figures"] = [str(path) for path in figures]
        self.results_json.write_text(json.dumps(report, indent=2))
        print(markdown)
        return report


def build_methods(args: argparse.Namespace, num_classes: int) -> dict[str, Method]:
    """Every registered method, set by the run's options."""
    return {name: create_method(name, args, num_classes) for name in METHODS}


def main(argv: list[str] | None = None) -> dict:
    """``python -m training.benchmark``: returns the report, or with ``--estimate_only`` the estimate and the
    cells."""
    return run(parse_args(argv))


def load_splits(args: argparse.Namespace
                ) -> tuple[ImageClassificationData, ImageClassificationData | None, ImageClassificationData]:
    """The training, validation (None: none) and test images: validation images are the split
    ``validation_split`` when the protocol names one, else the last ``validation_rows`` training rows."""
    train, test = load_train_and_test(args)
    if args.validation_split is None:
        return (*train.split_off(args.validation_rows), test)
    if args.validation_rows:
        raise ValueError(f"validation_split={args.validation_split} and validation_rows={args.validation_rows}: "
                         "validate on a split or on the last training rows, not both (give validation_rows=0)")
    validation = load_classification_data(args.dataset_name, args.validation_split, args.image_column_name,
                                          args.label_column_name, None, args.resolution, train.channels,
                                          train.num_classes)
    return train, validation, test


def run(args: argparse.Namespace) -> dict:
    """Runs the benchmark that ``args`` (``protocols.parse_args``) describes."""
    started = time.perf_counter()
    train, validation, test = load_splits(args)
    if not 0 <= args.protected_class < train.num_classes:
        raise ValueError(f"protected_class={args.protected_class} is not a class of {args.dataset_name} "
                         f"(0..{train.num_classes - 1})")
    defenses = build_defenses(train.num_classes, args.protected_class, args.adversarial_epsilon / 255,
                              args.adversarial_steps)
    cells = plan_cells(args.methods, args.victims, args.defenses, args.defense_methods, args.transfer_methods,
                       defenses, args.victim_seeds)
    variants = protected_sets(cells, build_methods(args, train.num_classes), defenses, args.transfer_surrogate)
    photos = (Photos(args.dataset_name, args.train_split, args.image_column_name, args.train_rows)
              if args.photos else None)
    cache = PerturbationCache(args.cache_dir, train, salt="" if photos is None else "published photos")
    to_generate = {label: method for label, method in variants.items()
                   if not isinstance(method, Clean) and not cache.path(label, method).exists()}
    earlier = earlier_report(args.output_dir / "results.json", settings_digest(args))
    done = reusable_runs(earlier.get("runs", []), cells, variants, args)
    remaining = [cell for cell in cells if run_key(cell) not in done]
    if done:
        print(f"Resuming {args.output_dir / 'results.json'}: {len(cells) - len(remaining)} of {len(cells)} "
              "victims already trained", flush=True)
    with open_workers(args, train, validation, test) as workers:
        throughput = MeasuredThroughput(train, args.batch_size, workers, args.workers)
        estimate = estimate_seconds(remaining, defenses, to_generate, len(train.labels), len(test.labels),
                                    args.victim_epochs, throughput, args.bf16_victims, throughput.victims,
                                    0 if validation is None else len(validation.labels))
        print(describe_plan(remaining, args.victim_epochs, len(to_generate), len(variants), len(train.labels),
                            estimate, throughput.measured), flush=True)
        if args.budget_minutes and estimate["total_seconds"] > 60 * args.budget_minutes:
            print(f"WARNING: over the {args.protocol} protocol's budget of {args.budget_minutes:.0f} min: run a "
                  "subset (--methods, --defenses, --defense_methods, --victims) or fewer --epochs", flush=True)
        if args.estimate_only:
            return {"estimate": estimate, "cells": [asdict(cell) for cell in cells]}
        cached = [label for label, method in variants.items() if not isinstance(method, Clean)
                  and label not in to_generate]
        report = new_report(args, train, validation, test, estimate, cached)
        report["earlier_seconds"] = earlier.get("seconds", 0) + earlier.get("earlier_seconds", 0)
        for key in ("quality", "speed"):  # the sets a resumed run does not need to read again
            report[key].update(earlier.get(key, {}))
        return PlanRun(args, started, cells, defenses, variants, to_generate, cache, train, test, workers,
                       report, done, photos).run()
