"""The usefulness table and figure: Dice on the real test split of a segmentor per training set.

Rows: the training sets (:data:`segdiff.usefulness.sets.TRAINSETS`, those the study ran); per modality a
``Dice`` column (pooled, mean over organs) and a ``/ real`` column (the ratio to the real-only
segmentor). The long CSV holds every organ's Dice and the Dice per view.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from segdiff.core.atomic import atomic_path
from segdiff.usefulness.sets import TRAINSET_LABELS, TRAINSETS

__all__ = ["usefulness_tables", "write_usefulness_report", "usefulness_figure"]


def _runs(metrics_files: Sequence[str | Path]) -> list[dict]:
    return [json.loads(Path(f).read_text()) for f in metrics_files]


def usefulness_tables(metrics_files: Sequence[str | Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(wide table of formatted strings: training set x modality Dice and ratio, long table: modality,
    trainset, metric, value).

    Args:
        metrics_files: the runs' ``metrics.json`` (:func:`segdiff.usefulness.score.score_segmentor`).
    """
    runs = _runs(metrics_files)
    modalities = list(dict.fromkeys(r["modality"] for r in runs))
    sets = [s for s in TRAINSETS if any(r["trainset"] == s for r in runs)]
    by = {(r["modality"], r["trainset"]): r for r in runs}
    wide = pd.DataFrame(index=[TRAINSET_LABELS[s] for s in sets], dtype=object)
    long = []
    for m in modalities:
        real = by.get((m, "real"), {}).get("dice")
        for s in sets:
            r = by.get((m, s))
            dice = None if r is None else r["dice"]
            ratio = None if dice is None or not real else dice / real
            wide.loc[TRAINSET_LABELS[s], f"{m.upper()} Dice"] = "n/a" if dice is None else f"{dice:.3f}"
            wide.loc[TRAINSET_LABELS[s], f"{m.upper()} / real"] = "n/a" if ratio is None else f"{ratio:.3f}"
            if r is None:
                continue
            long += [{"modality": m, "trainset": s, "metric": "dice", "value": dice},
                     {"modality": m, "trainset": s, "metric": "ratio_to_real", "value": ratio},
                     {"modality": m, "trainset": s, "metric": "train_slices", "value": r.get("train_slices")}]
            long += [{"modality": m, "trainset": s, "metric": f"dice:{organ}", "value": v} for organ, v in r["dice_per_organ"].items()]
            long += [{"modality": m, "trainset": s, "metric": f"dice_view:{v}", "value": d} for v, d in r["dice_per_view"].items()]
    return wide, pd.DataFrame(long, columns=["modality", "trainset", "metric", "value"])


def usefulness_figure(metrics_files: Sequence[str | Path], out: str | Path) -> None:
    """Per-organ Dice on the real test split by training set, one panel per modality.

    Args:
        metrics_files: the runs' ``metrics.json``.
        out: the PNG to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = _runs(metrics_files)
    modalities = list(dict.fromkeys(r["modality"] for r in runs))
    sets = [s for s in TRAINSETS if any(r["trainset"] == s for r in runs)]
    fig, axes = plt.subplots(len(modalities), 1, figsize=(11, 0.6 + 3.2 * len(modalities)), squeeze=False)
    width = 0.8 / max(len(sets), 1)
    for ax, m in zip(axes[:, 0], modalities):
        mine = {r["trainset"]: r for r in runs if r["modality"] == m}
        organs = list(dict.fromkeys(o for r in mine.values() for o in r["dice_per_organ"]))
        x = np.arange(len(organs))
        for i, s in enumerate(sets):
            if s not in mine:
                continue
            values = [mine[s]["dice_per_organ"].get(o, np.nan) for o in organs]
            ax.bar(x + (i - (len(sets) - 1) / 2) * width, values, width,
                   label=f"{TRAINSET_LABELS[s]} (mean {mine[s]['dice']:.3f})")
        ax.set_xticks(x, organs, rotation=40, ha="right", fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_ylabel("Dice on real test slices")
        ax.set_title(f"{m.upper()}: Dice of a segmentor trained on each set (legend: mean over organs)", fontsize=10)
        ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.5), frameon=False)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def write_usefulness_report(metrics_files: Sequence[str | Path], csv: str | Path, md: str | Path, long_csv: str | Path,
                            figure: str | Path, notes: Sequence[str] = ()) -> pd.DataFrame:
    """Write the usefulness table (CSV, Markdown with ``notes``), its long form and its figure, atomically.

    Args:
        metrics_files: the runs' ``metrics.json``.
        csv: the wide CSV.
        md: the Markdown table.
        long_csv: the long CSV (modality, trainset, metric, value).
        figure: the per-organ figure (PNG).
        notes: footnotes below the Markdown table.

    Returns:
        The wide table.
    """
    wide, long = usefulness_tables(metrics_files)
    with atomic_path(csv) as tmp:
        wide.to_csv(tmp, index_label="training set")
    header = "| training set | " + " | ".join(wide.columns) + " |"
    rows = [f"| {name} | " + " | ".join(str(v) for v in row) + " |" for name, row in wide.iterrows()]
    with atomic_path(md) as tmp:
        tmp.write_text("\n".join([header, "|---|" + "---:|" * len(wide.columns), *rows]) + "\n"
                       + "".join(f"\n{n}\n" for n in notes))
    with atomic_path(long_csv) as tmp:
        long.to_csv(tmp, index=False)
    usefulness_figure(metrics_files, figure)
    return wide

