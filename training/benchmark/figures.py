"""The report's PNG figures: accuracy curves, a bar chart per defense, and protected samples."""

from __future__ import annotations

from pathlib import Path

import torch
from matplotlib.figure import Figure

from .report import headline_name, mean_and_error, seed_values

SAMPLES = 3  # images per protected set in the samples figure


def curves_figure(runs: list[dict], victims: list[str], measured_on: str) -> Figure:
    """Accuracy per epoch (on clean ``measured_on`` images) of every method without defense, one panel per
    victim."""
    figure = Figure(figsize=(5 * len(victims), 3.5), layout="constrained")
    for axis, victim in zip(figure.subplots(1, len(victims), squeeze=False)[0], victims):
        for run in (run for run in runs if run["victim"] == victim):
            is_clean = run["method"] == "clean"
            axis.plot(range(1, len(run["history"]) + 1), run["history"], marker=".", label=run["method"],
                      linestyle="--" if is_clean else "-", color="black" if is_clean else None)
        axis.set(title=f"{victim}, no defense", xlabel="epoch", ylabel=f"clean {measured_on} accuracy",
                 ylim=(0, 1))
        axis.legend(fontsize="small")
    return figure


def defense_figure(defense: str, cells: dict[tuple[str, str], list[float]], reference: float | None,
                   reference_victim: str, metric: str = "accuracy") -> Figure:
    """A bar per (method, victim) under ``defense``, the mean over its seeds with the standard error, against
    the clean accuracy without defense."""
    several = len({victim for _, victim in cells}) > 1
    figure = Figure(figsize=(max(4.0, 0.7 * len(cells) + 1.5), 3.5), layout="constrained")
    axis = figure.subplots()
    summaries = [mean_and_error(values) for values in cells.values()]
    axis.bar([f"{method}\n{victim}" if several else method for method, victim in cells],
             [mean for mean, _ in summaries], yerr=[error or 0 for _, error in summaries], color="tab:blue")
    if reference is not None:
        axis.axhline(reference, color="black", linestyle="--", label=f"clean, no defense ({reference_victim})")
        axis.legend(fontsize="small")
    axis.set(title=f"defense: {defense}", ylabel=f"clean test {metric}", ylim=(0, 1))
    axis.tick_params(axis="x", labelrotation=45, labelsize="small")
    return figure


def samples_figure(clean: torch.Tensor, protected: dict[str, torch.Tensor], levels: int) -> Figure:
    """Clean, protected and amplified-noise images, a row per protected set."""
    figure = Figure(figsize=(3.6 * SAMPLES, 1.3 * len(protected)), layout="constrained")
    axes = figure.subplots(len(protected), 3 * SAMPLES, squeeze=False)
    for row, (label, images) in zip(axes, protected.items()):
        for index in range(min(SAMPLES, len(images))):
            noise = (images[index].float() - clean[index].float()) / (2 * levels) + 0.5  # ±ε → [0, 1]
            shown = (clean[index].float() / 255, images[index].float() / 255, noise)
            for axis, image, title in zip(row[3 * index:3 * index + 3], shown, ("clean", label, "noise, amplified")):
                axis.imshow(image.clamp(0, 1).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
                axis.set_title(title, fontsize=7)
        for axis in row:
            axis.set_axis_off()
    return figure


def write_figures(report: dict, clean: torch.Tensor, protected: dict[str, torch.Tensor],
                  folder: Path) -> list[Path]:
    """Accuracy curves (no defense), a bar chart per defense, and clean / protected / amplified-noise
    samples."""
    runs = report["runs"]
    victims = list(dict.fromkeys(run["victim"] for run in runs))
    values = seed_values(report)
    figures: dict[str, Figure] = {}
    first_seed = runs[0].get("seed", 0) if runs else 0
    if curves := [run for run in runs if run["defense"] == "none" and run.get("seed", 0) == first_seed]:
        measured_on = "validation" if report.get("n_validation") else "test"
        figures["curves.png"] = curves_figure(curves, victims, f"{measured_on} (seed {first_seed})")
    clean_accuracy = values.get(("clean", victims[0], "none")) if victims else None
    reference = mean_and_error(clean_accuracy)[0] if clean_accuracy else None
    for defense in dict.fromkeys(run["defense"] for run in runs):
        chosen = {(method, victim): found for (method, victim, name), found in values.items() if name == defense}
        figures[f"defense-{defense}.png"] = defense_figure(defense, chosen, reference, victims[0],
                                                           headline_name(report))
    if protected:
        figures["samples.png"] = samples_figure(clean, protected, report["epsilon_levels"])
    for name, figure in figures.items():
        figure.savefig(folder / name, dpi=120)
    return [folder / name for name in figures]
