"""What a benchmark run trains (its cells: method × victim × defense) and how long that takes here."""

from __future__ import annotations

import multiprocessing.synchronize
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from modeling_confounder.pipeline import default_device
from training.data import ImageClassificationData
from training.defenses import Defense
from training.methods import Method
from training.models import create_classifier

# images per second of a timm name with a stem choice (None: automatic, False: strided) and a bf16 choice
Throughput = Callable[[str, "bool | None", bool], float]


@dataclass(frozen=True)
class Cell:
    """One victim training; ``variant`` names its protected training set (``em``, or ``em-transfer``), ``seed``
    the victim's initialisation, batch order and augmentation (and the images that partial protection picks)."""

    method: str
    victim: str
    defense: str
    variant: str
    seed: int = 0


def plan_cells(methods: list[str], victims: list[str], defenses: list[str], defense_methods: list[str],
               transfer_methods: list[str], registry: dict[str, Defense], seeds: list[int] = (0,)) -> list[Cell]:
    """``none``: every method on every victim. ``transfer``: the ``transfer_methods`` on every victim. Other
    defenses: the ``defense_methods`` on the first victim (clean data only where it is the reference).

    Every cell once per victim seed, all of the first seed's cells first: a run cut short still has a complete
    grid for its first seeds."""
    cells = []
    for name in defenses:
        defense = registry[name]
        if name == "none":
            chosen = [Cell(method, victim, name, method) for victim in victims for method in methods]
        elif defense.transfer:
            chosen = [Cell(method, victim, name, f"{method}-transfer") for method in methods
                      if method in transfer_methods for victim in victims]
        else:
            # Under partial protection, clean data means the unprotected part alone (see Defense.training_set);
            # there is no such reference for one protected class.
            chosen = [Cell(method, victims[0], name, method) for method in methods
                      if method in defense_methods and not (defense.protected_class is not None
                                                            and method == "clean")]
        if not chosen:
            wanted = "--transfer_methods" if defense.transfer else "--defense_methods"
            raise ValueError(f"the {name} defense has nothing to run: give {wanted} a protection method "
                             f"that is also among --methods ({' '.join(methods)})")
        cells += chosen
    return [replace(cell, seed=seed) for seed in seeds for cell in cells]


def protected_sets(cells: list[Cell], methods: dict[str, Method], registry: dict[str, Defense],
                   transfer_surrogate: str) -> dict[str, Method]:
    """The method that makes each protected training set the cells need, by variant, in the cells' order."""
    return {cell.variant: replace(methods[cell.method], surrogate=transfer_surrogate)
            if registry[cell.defense].transfer else methods[cell.method] for cell in cells}


def measure_images_per_second(name: str, small_input_stem: bool | None, data: ImageClassificationData,
                              batch_size: int, bf16: bool = False, steps: int = 3,
                              barrier: multiprocessing.synchronize.Barrier | None = None) -> float:
    """Training throughput of a timm model here: forward, backward and an SGD step on random batches.

    With a ``barrier``, timing starts once every worker holding it is ready, so the workers share the CPU as
    they do when they train victims."""
    device = torch.device(default_device())
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


def estimate_seconds(cells: list[Cell], registry: dict[str, Defense], to_generate: dict[str, Method],
                     n_train: int, n_test: int, epochs: dict[str, int], images_per_second: Throughput,
                     bf16_victims: Collection[str] = (),
                     victim_images_per_second: Throughput | None = None, n_validation: int = 0) -> dict[str, float]:
    """Time of a plan from training throughputs (for victims, of all the workers together when they differ).

    A victim epoch trains on every training image (times the defense's cost) and tests on every validation
    image (or, without them, every test image), which costs about a third as much; with validation images the
    test images are seen once. Making a protected set costs its method's CPU budget when it has one, else its
    surrogate work; methods without one (noise, a shipped generator) take seconds.
    """
    def train_share(cell: Cell) -> float:  # clean data under partial protection: the unprotected part only
        defense = registry[cell.defense]
        return 1 - defense.protected_fraction if cell.method == "clean" and defense.protects_part else 1

    def victim_images(cell: Cell) -> float:
        per_epoch = n_train * train_share(cell) * registry[cell.defense].cost + (n_validation or n_test) / 3
        return epochs[cell.victim] * per_epoch + (n_test / 3 if n_validation else 0)

    victim_images_per_second = victim_images_per_second or images_per_second
    victims = sum(victim_images(cell) / victim_images_per_second(cell.victim, None, cell.victim in bf16_victims)
                  for cell in cells)
    generation = 0.0
    for method in to_generate.values():
        if (limit := method.budget_wall_seconds()) is not None:
            generation += limit
        elif work := method.work(n_train):
            generation += work.passes / images_per_second(work.model, work.small_input_stem, False)
    return {"victims_seconds": victims, "generation_seconds": generation,
            "total_seconds": victims + generation}


def describe_plan(cells: list[Cell], victim_epochs: dict[str, int], made: int, total: int, n_train: int,
                  estimate: dict[str, float], measured: dict[tuple[str, bool | None, bool, int], float]) -> str:
    """The plan and its estimated time, with the throughputs measured for it (``made`` of ``total`` protected
    sets still to make)."""
    per_victim = ", ".join(f"{victim}: {sum(cell.victim == victim for cell in cells)} of {epochs} epochs"
                           for victim, epochs in victim_epochs.items())
    throughputs = ", ".join(f"{name}{'' if stem is None else ' (strided)'}{' bf16' if bf16 else ''}"
                            f"{f' in {count} workers' if count > 1 else ''} {value:.0f}"
                            for (name, stem, bf16, count), value in measured.items())
    return (f"Plan: {len(cells)} victims on {n_train} images ({per_victim}); "
            f"{made} of {total} protected sets to make, the others cached or clean.\n"
            f"Estimated time: {estimate['total_seconds'] / 60:.0f} min (victims "
            f"{estimate['victims_seconds'] / 60:.0f} min, protection {estimate['generation_seconds'] / 60:.0f} "
            f"min), from training throughputs measured now, in images/s: {throughputs}")
