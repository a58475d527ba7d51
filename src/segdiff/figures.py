"""Figures of the study (matplotlib, Agg backend), each written atomically as PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from segdiff.atomic import atomic_path  # noqa: E402
from segdiff.labels import LabelMap  # noqa: E402
from segdiff.shards import read_shard  # noqa: E402

__all__ = ["label_colormap", "show_overlay", "slice_preview_figure", "loss_curve_figure", "generation_grid_figure",
           "generations_panel_figure", "dice_per_organ_figure", "metrics_by_run_figure"]


def label_colormap(labels: LabelMap) -> ListedColormap:
    """A qualitative colour per label id (index = id); id 0 is transparent."""
    base = plt.get_cmap("tab20")(np.linspace(0, 1, 20))
    colours = np.zeros((labels.max_id + 1, 4))
    for i in range(1, labels.max_id + 1):
        colours[i] = base[(i - 1) % 20]
    return ListedColormap(colours)


def show_overlay(ax, image: np.ndarray, mask: np.ndarray | None, labels: LabelMap, alpha: float = 0.45) -> None:
    """Gray image with the label mask on top (background transparent)."""
    ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    if mask is not None:
        ax.imshow(np.ma.masked_equal(mask, 0), cmap=label_colormap(labels), vmin=0, vmax=labels.max_id,
                  alpha=alpha, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _preview_slice(manifest: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, str] | None:
    """The slice with most foreground of the first test case (else any case) that has slices."""
    ranked = manifest[manifest["n_slices"] > 0].sort_values("split", key=lambda s: s != "test", kind="stable")
    if ranked.empty:
        return None
    row = ranked.iloc[0]
    shard = read_shard(row["shard"])
    i = int(np.argmax(np.count_nonzero(shard.mask.reshape(len(shard.mask), -1), axis=1)))
    return shard.image[i], shard.mask[i], f"{row['case']} [{int(shard.slice[i])}]"


def slice_preview_figure(manifests: Sequence[str | Path], out: str | Path, labels: LabelMap) -> None:
    """Grid of image + mask overlays: one row per modality, one column per view."""
    tables = [pd.read_csv(m, sep="\t") for m in manifests]
    modalities = sorted({t["modality"].iloc[0] for t in tables if len(t)})
    views = list(dict.fromkeys(t["view"].iloc[0] for t in tables if len(t)))
    fig, axes = plt.subplots(len(modalities), len(views), figsize=(2.6 * len(views), 2.9 * len(modalities)), squeeze=False, layout="constrained")
    for table in tables:
        if table.empty:
            continue
        ax = axes[modalities.index(table["modality"].iloc[0])][views.index(table["view"].iloc[0])]
        picked = _preview_slice(table)
        if picked is None:
            ax.set_axis_off()
            ax.set_title(f"{table['modality'].iloc[0].upper()} {table['view'].iloc[0]}: no slice", fontsize=8)
            continue
        image, mask, name = picked
        show_overlay(ax, image, mask, labels)
        ax.set_title(f"{table['modality'].iloc[0].upper()} {table['view'].iloc[0]}\n{name}", fontsize=8)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def loss_curve_figure(histories: dict[str, str | Path], out: str | Path, title: str = "training loss") -> None:
    """Loss per step (raw and a 25-step moving average) of one or more runs, log scale."""
    fig, ax = plt.subplots(figsize=(5.5, 3.5), layout="constrained")
    for name, csv in histories.items():
        table = pd.read_csv(csv)
        line = ax.plot(table["step"], table["loss"], alpha=0.25, lw=0.8)[0]
        ax.plot(table["step"], table["loss"].rolling(25, min_periods=1).mean(), color=line.get_color(), label=name)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def generation_grid_figure(original: np.ndarray | None, mask: np.ndarray, generated: np.ndarray, labels: LabelMap,
                           out: str | Path, title: str, rows: int = 6) -> None:
    """Columns Original | Segmentation | Generation 1..k for up to ``rows`` slices spread over the set.

    ``generated`` is (N, k, H, W); ``original`` may be None (multi-modal: no paired image).
    """
    n, k = generated.shape[:2]
    picks = np.unique(np.linspace(0, n - 1, min(rows, n)).round().astype(int))
    cols = 2 + k
    fig, axes = plt.subplots(len(picks), cols, figsize=(1.6 * cols, 1.6 * len(picks) + 0.4), squeeze=False, layout="constrained")
    for r, i in enumerate(picks):
        if original is not None:
            show_overlay(axes[r][0], original[i], None, labels)
        else:
            axes[r][0].set_axis_off()
        show_overlay(axes[r][1], np.zeros_like(mask[i], dtype=np.float32), mask[i], labels, alpha=1.0)
        for j in range(k):
            show_overlay(axes[r][2 + j], generated[i, j], None, labels)
    for c, name in enumerate(["Original", "Segmentation"] + [f"Generation {j + 1}" if k > 1 else "Generation" for j in range(k)]):
        axes[0][c].set_title(name, fontsize=8)
    fig.suptitle(title, fontsize=9)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def generations_panel_figure(panels: list[tuple[str, dict]], labels: LabelMap, out: str | Path, k: int = 3) -> None:
    """The poster's Generations panel: one row per experiment (name, generation arrays), columns
    Original | Segmentation | Generation(s). Each row shows the test slice with the most foreground."""
    cols = 2 + k
    fig, axes = plt.subplots(len(panels), cols, figsize=(1.7 * cols, 1.8 * len(panels) + 0.3), squeeze=False,
                             layout="constrained")
    for r, (name, arrays) in enumerate(panels):
        i = int(np.argmax(np.count_nonzero(arrays["mask"].reshape(len(arrays["mask"]), -1), axis=1)))
        show_overlay(axes[r][0], arrays["original"][i], None, labels)
        show_overlay(axes[r][1], np.zeros(arrays["mask"][i].shape, np.float32), arrays["mask"][i], labels, alpha=1.0)
        generated = arrays["generated"][i]
        for j in range(k):
            if j < len(generated):
                show_overlay(axes[r][2 + j], generated[j], None, labels)
            else:
                axes[r][2 + j].set_axis_off()
        axes[r][0].set_ylabel(name, fontsize=8)
    for c, title in enumerate(["Original", "Segmentation"] + [f"Generation {j + 1}" for j in range(k)]):
        axes[0][c].set_title(title, fontsize=8)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def dice_per_organ_figure(metrics: list[dict], out: str | Path) -> None:
    """Per-organ Dice of the segmentor on original vs generated slices, one panel per run."""
    fig, axes = plt.subplots(len(metrics), 1, figsize=(8, 2.4 * len(metrics)), squeeze=False, layout="constrained")
    for ax, run in zip(axes[:, 0], metrics):
        organs = list(run["per_organ"])
        x = np.arange(len(organs))
        orig = [run["per_organ"][o]["dice_orig"] or 0.0 for o in organs]
        gen = [run["per_organ"][o]["dice_gen"] or 0.0 for o in organs]
        ax.bar(x - 0.2, orig, 0.4, label="original (upper bound)", color="0.6")
        ax.bar(x + 0.2, gen, 0.4, label="generated", color="tab:blue")
        ax.set_xticks(x, organs, rotation=35, ha="right", fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_ylabel("Dice")
        ax.set_title(run["label"], fontsize=9)
    axes[0, 0].legend(fontsize=7, loc="upper right")
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def metrics_by_run_figure(metrics: list[dict], out: str | Path) -> None:
    """Bars of each headline metric per run (views and modalities side by side)."""
    keys = [("psnr", "PSNR"), ("ssim", "SSIM"), ("fid", "FID"), ("dice_orig", "Dice_orig"), ("dice_gen", "Dice_gen"),
            ("fd_seg", "FD_seg")]
    fig, axes = plt.subplots(1, len(keys), figsize=(2.3 * len(keys), 2.8), layout="constrained")
    names = [m["label"] for m in metrics]
    for ax, (key, title) in zip(axes, keys):
        values = [m.get(key) for m in metrics]
        ax.bar(range(len(names)), [v if v is not None else 0.0 for v in values], color="tab:blue")
        for i, v in enumerate(values):
            if v is None:
                ax.text(i, 0, "n/a", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
        ax.set_title(title, fontsize=9)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
