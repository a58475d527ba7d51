"""Figures of the study (matplotlib, Agg backend), each written atomically as PNG."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import ListedColormap, hsv_to_rgb  # noqa: E402

from segdiff.core.atomic import atomic_path  # noqa: E402
from segdiff.core.labels import LabelMap  # noqa: E402

__all__ = ["ORIGINAL", "label_colormap", "show_overlay", "slice_preview_figure", "loss_curve_figure", "loss_panels_figure",
           "generation_grid_figure", "generations_panel_figure", "oracle_vs_generated_figure", "dice_per_organ_figure",
           "metrics_by_run_figure"]

_GOLDEN = 0.618033988749895

#: the title of a grid's first column, the real slice each mask belongs to
ORIGINAL = "Original"


def _qualitative(n: int) -> np.ndarray:
    """``n`` distinct RGBA colours: tab20, tab20b, tab20c (60), then a golden-ratio hue sequence."""
    base = np.concatenate([plt.get_cmap(name).colors for name in ("tab20", "tab20b", "tab20c")])
    colours = np.ones((max(n, 0), 4))
    m = min(n, len(base))
    colours[:m, :3] = base[:m]
    for i in range(m, n):
        j = i - len(base)
        hsv = ((0.05 + j * _GOLDEN) % 1.0, (0.85, 0.55)[j % 2], (0.9, 0.7, 1.0)[j % 3])
        colours[i, :3] = hsv_to_rgb(hsv)
    return colours


def label_colormap(labels: LabelMap) -> ListedColormap:
    """A qualitative colour per label id (index = id), distinct for any number of ids; id 0 is transparent.

    Ids 1..60 take tab20, tab20b and tab20c in turn (AMOS's 15 organs keep tab20's colours), further
    ids a golden-ratio sequence of hues.
    """
    colours = np.zeros((labels.max_id + 1, 4))
    colours[1:] = _qualitative(labels.max_id)
    return ListedColormap(colours)


def show_overlay(ax, image: np.ndarray, mask: np.ndarray | None, labels: LabelMap, alpha: float = 0.45) -> None:
    """Gray image with the label mask on top (background transparent).

    Args:
        ax: the matplotlib axes to draw on.
        image: (H, W) image in [0, 1].
        mask: (H, W) label ids, or None for the image alone.
        labels: the label map (the colours).
        alpha: the mask's opacity.
    """
    ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    if mask is not None:  # the organs only: a body envelope (labels.body_id, preprocess.body) is not drawn
        shown = np.ma.masked_where((mask == 0) | (mask > labels.max_id), mask)
        ax.imshow(shown, cmap=label_colormap(labels), vmin=0, vmax=labels.max_id, alpha=alpha, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _preview_slice(manifest: pd.DataFrame, store: Path) -> tuple[np.ndarray, np.ndarray, str] | None:
    """The slice with most foreground of the first test case (else any case) that has slices, read from the
    subset's slice ``store`` (the shards may be gone: ``preprocess.keep_shards``)."""
    from segdiff.data.store import SliceStore

    ranked = manifest[manifest["n_slices"] > 0].sort_values("split", key=lambda s: s != "test", kind="stable")
    if ranked.empty:
        return None
    case = str(ranked.iloc[0]["case"])
    slices = SliceStore([store])
    rows = slices.take(np.flatnonzero(slices.case == case))
    i = int(np.argmax(np.count_nonzero(rows.mask.reshape(len(rows.mask), -1), axis=1)))
    return rows.image[i], rows.mask[i], f"{case} [{int(rows.slice[i])}]"


def slice_preview_figure(manifests: Sequence[str | Path], out: str | Path, labels: LabelMap) -> None:
    """Grid of image + mask overlays: one row per modality, one column per view.

    Args:
        manifests: the subsets' manifest TSVs, each beside its slice store (``store/``); each shows the
            slice with most foreground of its first test case (else any case with slices).
        out: the image file to write.
        labels: the label map (the colours).
    """
    tables = [pd.read_csv(m, sep="\t") for m in manifests]
    stores = [Path(m).parent / "store" for m in manifests]
    modalities = sorted({t["modality"].iloc[0] for t in tables if len(t)})
    views = list(dict.fromkeys(t["view"].iloc[0] for t in tables if len(t)))
    fig, axes = plt.subplots(len(modalities), len(views), figsize=(2.6 * len(views), 2.9 * len(modalities)), squeeze=False, layout="constrained")
    for table, store in zip(tables, stores):
        if table.empty:
            continue
        ax = axes[modalities.index(table["modality"].iloc[0])][views.index(table["view"].iloc[0])]
        picked = _preview_slice(table, store)
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


def _plot_losses(ax, histories: Mapping[str, str | Path], title: str) -> None:
    """Loss per step (raw and a 25-step moving average) of each run on ``ax``, log scale."""
    for name, csv in histories.items():
        table = pd.read_csv(csv)
        line = ax.plot(table["step"], table["loss"], alpha=0.25, lw=0.8)[0]
        ax.plot(table["step"], table["loss"].rolling(25, min_periods=1).mean(), color=line.get_color(), label=name)
    if histories:
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no runs", ha="center", va="center", transform=ax.transAxes, fontsize=8, color="0.4")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=10)


def loss_curve_figure(histories: dict[str, str | Path], out: str | Path, title: str = "training loss") -> None:
    """Loss per step (raw and a 25-step moving average) of one or more runs, log scale.

    Args:
        histories: run label -> its loss CSV (:func:`~segdiff.models.training.write_history`).
        out: the image file to write.
        title: the plot's title.
    """
    fig, ax = plt.subplots(figsize=(5.5, 3.5), layout="constrained")
    _plot_losses(ax, histories, title)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def loss_panels_figure(panels: Mapping[str, Mapping[str, str | Path]], out: str | Path) -> None:
    """One loss subplot per model kind, side by side, each with its own log y scale and legend.

    Args:
        panels: subplot title -> {run label: loss CSV}, e.g.
            ``{"diffusion models (MSE of the prediction target)": {"CT axial": csv},
            "auxiliary segmentors (Dice + CE)": {"CT": csv}}``.
        out: the image file to write.
    """
    n = max(len(panels), 1)
    fig, axes = plt.subplots(1, n, figsize=(5.0 * n, 3.5), squeeze=False, layout="constrained")
    for ax, (title, histories) in zip(axes[0], panels.items()):
        _plot_losses(ax, histories, title)
    if not panels:
        axes[0, 0].set_axis_off()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def _image_grid(n_rows: int, n_cols: int, aspect: float = 1.0, cell: float = 1.5, gap: float = 0.06,
                group_gaps: Mapping[int, float] | None = None, left: float = 0.35, top: float = 0.45,
                bottom: float = 0.08, right: float = 0.08) -> tuple[plt.Figure, np.ndarray]:
    """A figure of ``n_rows`` x ``n_cols`` image cells placed in inches (no automatic layout), so every
    row and column lines up whatever the cells hold. ``aspect`` is height / width of a cell;
    ``group_gaps`` adds space (inches) after the given column indices; ``top`` leaves room for titles."""
    group_gaps = group_gaps or {}
    height = cell * aspect
    xs, x = [], left
    for c in range(n_cols):
        xs.append(x)
        x += cell + gap + group_gaps.get(c, 0.0)
    fig_w = x - gap + right
    fig_h = top + n_rows * height + (n_rows - 1) * gap + bottom
    fig = plt.figure(figsize=(fig_w, fig_h))
    axes = np.empty((n_rows, n_cols), dtype=object)
    for r in range(n_rows):
        y = fig_h - top - (r + 1) * height - r * gap
        for c in range(n_cols):
            ax = fig.add_axes((xs[c] / fig_w, y / fig_h, cell / fig_w, height / fig_h))
            ax.set_xticks([])
            ax.set_yticks([])
            axes[r, c] = ax
    return fig, axes


def _column_titles(fig: plt.Figure, axes_row: Sequence, titles: Sequence[str], pad: float = 0.05,
                   fontsize: float = 8) -> float:
    """Write ``titles`` centred above the cells of ``axes_row``, all on one baseline ``pad`` inches above
    the row; returns that baseline's height above the row's top in inches plus one text line."""
    fig_h = fig.get_figheight()
    top = max(ax.get_position().y1 for ax in axes_row)
    for ax, title in zip(axes_row, titles):
        box = ax.get_position()
        fig.text((box.x0 + box.x1) / 2, top + pad / fig_h, title, ha="center", va="bottom", fontsize=fontsize)
    return pad + fontsize / 72 * 1.4


def _blank(ax) -> None:
    ax.set_axis_off()


def _mask_image(ax, mask: np.ndarray, labels: LabelMap) -> None:
    show_overlay(ax, np.zeros(mask.shape, np.float32), mask, labels, alpha=1.0)


def _aspect(image: np.ndarray) -> float:
    return image.shape[-2] / image.shape[-1]


def generation_grid_figure(original: np.ndarray | None, mask: np.ndarray, generated: np.ndarray, labels: LabelMap,
                           out: str | Path, title: str, rows: int = 6, original_title: str = ORIGINAL) -> list[str]:
    """Columns Original | Segmentation | Generation 1..k for up to ``rows`` slices spread over the set.

    Args:
        original: (N, H, W) real images in [0, 1] (for a multi-modal run, the source modality's slices the
            masks come from), or None (the first column stays blank).
        mask: (N, H, W) the masks generated from.
        generated: (N, k, H, W) generations in [0, 1].
        labels: the label map (the colours).
        out: the image file to write.
        title: the figure's title.
        rows: the most slices shown.
        original_title: the first column's title (e.g. ``CT (source)`` for a CT→MRI run).

    Returns:
        The column titles, first column first.
    """
    n, k = generated.shape[:2]
    picks = np.unique(np.linspace(0, n - 1, min(rows, n)).round().astype(int))
    cols = 2 + k
    fig, axes = _image_grid(len(picks), cols, _aspect(mask), cell=1.5, top=0.55, left=0.1)
    for r, i in enumerate(picks):
        if original is not None:
            show_overlay(axes[r][0], original[i], None, labels)
        else:
            _blank(axes[r][0])
        _mask_image(axes[r][1], mask[i], labels)
        for j in range(k):
            show_overlay(axes[r][2 + j], generated[i, j], None, labels)
    names = [f"Generation {j + 1}" if k > 1 else "Generation" for j in range(k)]
    titles = [original_title, "Segmentation", *names]
    _column_titles(fig, axes[0], titles)
    fig.suptitle(title, fontsize=9, y=1 - 0.08 / fig.get_figheight(), va="top")
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return titles


def generations_panel_figure(panels: list[tuple[str, dict]], labels: LabelMap, out: str | Path,
                             first_titles: Sequence[str] | None = None) -> list[str]:
    """The poster's Generations panel: one row per experiment, columns Original | Segmentation |
    Generation 1..k with k the most generations of any experiment (rows with fewer leave the extra
    cells blank). Each row shows the slice with the most foreground.

    Args:
        panels: (experiment name, arrays) per row; arrays has ``mask`` (N, H, W), ``generated``
            (N, k, H, W) and optionally ``original`` (N, H, W).
        labels: the label map (the colours).
        out: the image file to write.
        first_titles: per row, what its first cell shows (None: :data:`ORIGINAL` for every row); a row whose
            first cell is not an original (a multi-modal row's ``CT (source)``) has that title written in the cell.

    Returns:
        The titles written in first cells, by row (empty where the column's ``Original`` holds).
    """
    k = max((arrays["generated"].shape[1] for _, arrays in panels), default=1)
    aspect = _aspect(panels[0][1]["mask"]) if panels else 1.0
    fig, axes = _image_grid(max(len(panels), 1), 2 + k, aspect, cell=1.5, left=0.3, top=0.3)
    for r, (name, arrays) in enumerate(panels):
        i = int(np.argmax(np.count_nonzero(arrays["mask"].reshape(len(arrays["mask"]), -1), axis=1)))
        if arrays.get("original") is not None and len(arrays["original"]):
            show_overlay(axes[r][0], arrays["original"][i], None, labels)
        else:
            axes[r][0].set_frame_on(False)
        _mask_image(axes[r][1], arrays["mask"][i], labels)
        generated = arrays["generated"][i]
        for j in range(k):
            if j < len(generated):
                show_overlay(axes[r][2 + j], generated[j], None, labels)
            else:
                _blank(axes[r][2 + j])
        axes[r][0].set_ylabel(name, fontsize=8)
    in_cell = ["" if t == ORIGINAL else t for t in (first_titles or [ORIGINAL] * len(panels))]
    for r, title in enumerate(in_cell):
        if title:
            axes[r][0].text(0.5, 0.97, title, transform=axes[r][0].transAxes, ha="center", va="top", fontsize=6,
                            color="white", bbox={"facecolor": "black", "alpha": 0.6, "pad": 1, "linewidth": 0})
    if not panels:
        for ax in axes[0]:
            _blank(ax)
    _column_titles(fig, axes[0], [ORIGINAL, "Segmentation"] + [f"Generation {j + 1}" for j in range(k)])
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return in_cell


def _spread_picks(mask: np.ndarray, rows: int) -> list[int]:
    """``rows`` slice indices spread over the set: the most-foreground slice of each of ``rows`` equal parts."""
    n = len(mask)
    foreground = np.count_nonzero(mask.reshape(n, -1), axis=1)
    return [int(part[np.argmax(foreground[part])]) for part in np.array_split(np.arange(n), min(rows, n)) if len(part)]


def oracle_vs_generated_figure(oracle: np.ndarray, generated: np.ndarray, mask: np.ndarray, labels: LabelMap,
                               out: str | Path, title: str, rows: int = 3) -> None:
    """Multi-inference with its ground truth: per test mask, Segmentation | oracle render 1..k | generation 1..k.

    Args:
        oracle: (N, k, H, W) k re-renders of the same anatomy (fresh noise and contrast), in [0, 1].
        generated: (N, k', H, W) the model's generations for the same masks, in [0, 1].
        mask: (N, H, W) the test masks.
        labels: the label map (the colours).
        out: the image file to write.
        title: the figure's title.
        rows: masks shown, spread over the set, each the one with most foreground in its part.
    """
    if oracle.ndim != 4 or generated.ndim != 4 or mask.ndim != 3:
        raise ValueError(f"expected oracle and generated (N, k, H, W) and mask (N, H, W), got {oracle.shape}, "
                         f"{generated.shape}, {mask.shape}")
    if not len(oracle) == len(generated) == len(mask) or not oracle.shape[2:] == generated.shape[2:] == mask.shape[1:]:
        raise ValueError(f"oracle {oracle.shape}, generated {generated.shape} and mask {mask.shape} do not match")
    ko, kg = oracle.shape[1], generated.shape[1]
    picks = _spread_picks(mask, rows)
    fig, axes = _image_grid(max(len(picks), 1), 1 + ko + kg, _aspect(mask), cell=1.3, gap=0.05,
                            group_gaps={0: 0.12, ko: 0.22}, left=0.1, top=0.85)
    for r, i in enumerate(picks):
        _mask_image(axes[r][0], mask[i], labels)
        for j in range(ko):
            show_overlay(axes[r][1 + j], oracle[i, j], None, labels)
        for j in range(kg):
            show_overlay(axes[r][1 + ko + j], generated[i, j], None, labels)
    if not picks:
        for ax in axes[0]:
            _blank(ax)
    titles = ["Segmentation"] + [f"render {j + 1}" for j in range(ko)] + [f"generation {j + 1}" for j in range(kg)]
    line = _column_titles(fig, axes[0], titles)
    fig_h = fig.get_figheight()
    top = axes[0][0].get_position().y1 + (line + 0.06) / fig_h
    for group, text in ((axes[0][1:1 + ko], "oracle renders (same anatomy, fresh noise/contrast)"),
                        (axes[0][1 + ko:], "generations")):
        if len(group) == 0:
            continue
        x0, x1 = group[0].get_position().x0, group[-1].get_position().x1
        fig.add_artist(plt.Line2D([x0 + 0.004, x1 - 0.004], [top, top], color="0.3", lw=0.8))
        fig.text((x0 + x1) / 2, top + 0.03 / fig_h, text, ha="center", va="bottom", fontsize=8.5, fontweight="bold")
    fig.suptitle(title, fontsize=9.5, y=1 - 0.06 / fig_h, va="top")
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def dice_per_organ_figure(metrics: list[dict], out: str | Path) -> None:
    """Per-organ Dice of the segmentor on original vs generated slices, one panel per run (the width grows with
    the organs, so 71 TotalVibeSegmentator structures keep readable names).

    Args:
        metrics: the runs' evaluation metrics (``label``, ``per_organ``, ...), one dict per run.
        out: the image file to write.
    """
    organs_max = max((len(run["per_organ"]) for run in metrics), default=0)
    upright = organs_max > 20  # TotalVibeSegmentator's structures: upright names, one per bar, and room for them
    fig, axes = plt.subplots(len(metrics), 1, figsize=(max(8, 0.18 * organs_max), (4.0 if upright else 2.4) * len(metrics)),
                             squeeze=False, layout="constrained")
    for ax, run in zip(axes[:, 0], metrics):
        organs = list(run["per_organ"])
        x = np.arange(len(organs))
        orig = [run["per_organ"][o]["dice_orig"] or 0.0 for o in organs]
        gen = [run["per_organ"][o]["dice_gen"] or 0.0 for o in organs]
        ax.bar(x - 0.2, orig, 0.4, label="original (upper bound)", color="0.6")
        ax.bar(x + 0.2, gen, 0.4, label="generated", color="tab:blue")
        if upright:
            ax.set_xticks(x, organs, rotation=90, ha="center", fontsize=7)
        else:
            ax.set_xticks(x, organs, rotation=35, ha="right", fontsize=7)
        ax.set_xlim(-0.6, len(organs) - 0.4)
        ax.set_ylim(0, 1)
        ax.set_ylabel("Dice")
        ax.set_title(run["label"], fontsize=9)
    axes[0, 0].legend(fontsize=7, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=2, frameon=False)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def metrics_by_run_figure(metrics: list[dict], out: str | Path) -> None:
    """Bars of each headline metric per run (views and modalities side by side).

    Args:
        metrics: the runs' evaluation metrics (``label`` and the headline values), one dict per run.
        out: the image file to write.
    """
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


def oracle_figure_from_evaluation(arrays: str | Path, labels: LabelMap, out: str | Path, title: str) -> None:
    """:func:`oracle_vs_generated_figure` of one evaluated run.

    Args:
        arrays: the run's ``arrays.npz`` (oracle renders, generations and masks).
        labels: the label map (the colours).
        out: the image file to write.
        title: the figure's title.
    """
    with np.load(arrays) as z:
        oracle_vs_generated_figure(z["oracle"], z["generated"], z["mask"], labels, out, title)
