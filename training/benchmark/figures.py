"""The report's PNG figures: accuracy curves, a bar chart per defense, and protected samples."""

from __future__ import annotations

from pathlib import Path

import torch
from matplotlib.figure import Figure

SAMPLES = 3  # images per protected set in the samples figure


def curves_figure(runs: list[dict], victims: list[str]) -> Figure:
    """Clean test accuracy per epoch of every method without defense, one panel per victim."""
    figure = Figure(figsize=(5 * len(victims), 3.5), layout="constrained")
    for axis, victim in zip(figure.subplots(1, len(victims), squeeze=False)[0], victims):
        for run in (run for run in runs if run["victim"] == victim):
            is_clean = run["method"] == "clean"
            axis.plot(range(1, len(run["history"]) + 1), run["history"], marker=".", label=run["method"],
                      linestyle="--" if is_clean else "-", color="black" if is_clean else None)
        axis.set(title=f"{victim}, no defense", xlabel="epoch", ylabel="clean test accuracy", ylim=(0, 1))
        axis.legend(fontsize="small")
    return figure


def defense_figure(defense: str, runs: list[dict], reference: float | None, reference_victim: str) -> Figure:
    """A bar per run under ``defense``, against the clean accuracy without defense."""
    several = len({run["victim"] for run in runs}) > 1
    figure = Figure(figsize=(max(4.0, 0.7 * len(runs) + 1.5), 3.5), layout="constrained")
    axis = figure.subplots()
    axis.bar([f"{run['method']}\n{run['victim']}" if several else run["method"] for run in runs],
             [run["test_acc"] for run in runs], color="tab:blue")
    if reference is not None:
        axis.axhline(reference, color="black", linestyle="--", label=f"clean, no defense ({reference_victim})")
        axis.legend(fontsize="small")
    axis.set(title=f"defense: {defense}", ylabel="clean test accuracy", ylim=(0, 1))
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
    figures: dict[str, Figure] = {}
    if curves := [run for run in runs if run["defense"] == "none"]:
        figures["curves.png"] = curves_figure(curves, victims)
    reference = next((run["test_acc"] for run in runs
                      if (run["method"], run["victim"], run["defense"]) == ("clean", victims[0], "none")), None)
    for defense in dict.fromkeys(run["defense"] for run in runs):
        chosen = [run for run in runs if run["defense"] == defense]
        figures[f"defense-{defense}.png"] = defense_figure(defense, chosen, reference, victims[0])
    if protected:
        figures["samples.png"] = samples_figure(clean, protected, report["epsilon_levels"])
    for name, figure in figures.items():
        figure.savefig(folder / name, dpi=120)
    return [folder / name for name in figures]
