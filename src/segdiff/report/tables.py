"""The comparison table in the poster's layout, and its tidy long form.

Rows: see :data:`ROWS`; one column per run (``CT axial``, ``CT``, ``MRI axial``, ``MRI``,
``CT→MRI axial`` ...). Cells that cannot exist are ``n/a`` (PSNR/SSIM of multi-modal runs, FID
without weights, oracle rows without a phantom). The row ``Quality flags`` shows the oracle-free
quality gate of each run (:mod:`segdiff.evaluation.quality`): ``ok``, or ``⚠`` and the names of the
failed checks; :func:`table_notes` gives their reasons and :func:`quality_warnings` the workflow's
warnings.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from segdiff.core.atomic import atomic_path

__all__ = ["ROWS", "QUALITY_ROW", "run_label", "flag_name", "quality_cell", "build_tables", "table_notes",
           "quality_warnings", "write_tables"]

#: the row of the quality gate's flags (its cell: ``ok`` or ``⚠`` + the failed checks' names)
QUALITY_ROW = "Quality flags"

#: (key in metrics.json, row name, decimals; None: a text cell): the strict headline, the quality gate, the
#: oracle (phantom only) and the poster authors' protocol, in that order.
ROWS = [
    ("psnr", "PSNR ↑", 2), ("ssim", "SSIM ↑", 3), ("fid", "FID ↓", 2), ("frd", "FRD ↓", 3),
    ("fd_seg", "FD_seg ↓ (segmentor features; not FID)", 3),
    ("dice_orig", "Dice_orig ↑", 3), ("dice_gen", "Dice_gen ↑", 3), ("dice_ratio", "Dice_gen / Dice_orig (goal 0.8–1.05)", 3),
    ("diversity_ratio", "Diversity ratio, generations / oracle (goal 0.5–1.5)", 3),
    ("diversity_gen", "Diversity of the k generations (std inside organs)", 4),
    ("diversity_oracle", "Diversity of k oracle renders (std inside organs)", 4),
    ("diversity_outside_ratio", "Diversity ratio outside organs, generations / oracle", 3),
    ("diversity_outside_gen", "Diversity of the k generations (std outside organs)", 4),
    ("diversity_outside_oracle", "Diversity of k oracle renders (std outside organs)", 4),
    ("texture_ratio", "Texture ratio, generations / real (high-pass energy inside organs)", 3),
    ("k_spread", "k-spread (std across the k generations / real fine-texture std)", 3),
    ("quality_flags", QUALITY_ROW, None),
    ("psnr_oracle", "PSNR of an oracle render (a second scan)", 2), ("ssim_oracle", "SSIM of an oracle render", 3),
    ("fid_oracle", "FID oracle floor", 2), ("frd_oracle", "FRD oracle floor", 3), ("fd_seg_oracle", "FD_seg oracle floor", 3),
    ("dice_oracle", "Dice_oracle (segmentor on oracle renders)", 3),
    ("psnr_poster", "PSNR (poster protocol)", 2), ("ssim_poster", "SSIM (poster protocol)", 3),
    ("fid_poster", "FID (poster protocol)", 2), ("dice_orig_poster", "Dice_orig (poster protocol)", 3),
    ("dice_gen_poster", "Dice_gen (poster protocol)", 3),
    ("n_slices", "test slices", 0), ("k", "generations per mask (k)", 0),
]

#: a flag's leading "name value < threshold" (segdiff.evaluation.quality.quality_flags)
_FLAG_HEAD = re.compile(r"^(?P<name>.*?)\s+[-+]?(?:\d[\d.]*(?:e[-+]?\d+)?|nan|inf)\s*[<>]")


def run_label(modality: str, view: str, source: str | None = None) -> str:
    """Column name in the poster's style: ``CT axial``, ``CT`` (all views), ``CT→MRI axial``.

    Args:
        modality: the generated modality (``ct``, ``mri``).
        view: ``axial``, ``coronal``, ``sagittal`` or ``all``.
        source: the conditioning masks' modality of a multi-modal run (None: the same).

    Returns:
        The label.
    """
    name = modality.upper() if source is None else f"{source.upper()}→{modality.upper()}"
    return name if view == "all" else f"{name} {view}"


def flag_name(flag: str) -> str:
    """The check's name of a quality flag: ``"texture ratio 0.03 < 0.1: ..."`` -> ``"texture ratio"``.

    Args:
        flag: one line of a run's ``quality_flags``.

    Returns:
        The name before the value (the text before the first colon when the flag has no value).
    """
    head = _FLAG_HEAD.match(flag)
    return head["name"] if head else flag.split(":", 1)[0].strip()


def quality_cell(flags: Sequence[str] | None) -> str:
    """The ``Quality flags`` cell: ``ok``, ``⚠ `` + the failed checks' names, or ``n/a`` (no gate recorded).

    Args:
        flags: a run's ``quality_flags`` (None: a metrics file from before the quality gate).

    Returns:
        The cell's text.
    """
    if flags is None:
        return "n/a"
    return "⚠ " + ", ".join(flag_name(f) for f in flags) if flags else "ok"


def _value(run: dict, key: str):
    return quality_cell(run.get(key)) if key == "quality_flags" else run.get(key)


def build_tables(metrics_files: Sequence[str | Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(wide table: rows x runs with formatted strings, long table: run, metric, value).

    Args:
        metrics_files: the runs' metrics JSON files, one column each.

    Returns:
        The wide table (metrics x runs, formatted strings; ``n/a`` where a number cannot exist) and the
        long one (one row per run, metric and, for Dice, organ; the quality flags as their cell's text).
    """
    runs = [json.loads(Path(f).read_text()) for f in metrics_files]
    long = pd.DataFrame([{"run": r["label"], "metric": key, "value": _value(r, key)} for r in runs for key, _, _ in ROWS])
    for r in runs:
        for organ, values in r.get("per_organ", {}).items():
            for key, value in values.items():
                long.loc[len(long)] = {"run": r["label"], "metric": f"{key}:{organ}", "value": value}
    wide = pd.DataFrame(index=[name for _, name, _ in ROWS], columns=[r["label"] for r in runs], dtype=object)
    for r in runs:
        for key, name, decimals in ROWS:
            value = r.get(key)
            if decimals is None:  # text
                wide.loc[name, r["label"]] = _value(r, key)
                continue
            missing = value is None or (isinstance(value, float) and math.isnan(value))
            wide.loc[name, r["label"]] = "n/a" if missing else (f"{int(value)}" if decimals == 0 else f"{value:.{decimals}f}")
    return wide, long


def table_notes(metrics_files: Sequence[str | Path], max_slices: int = 0) -> list[str]:
    """The table's footnotes: why cells are n/a, and how the test slices were chosen.

    Args:
        metrics_files: the runs' metrics JSON files.
        max_slices: ``evaluation.max_slices`` (0 = all test slices).

    Returns:
        One line per note.
    """
    runs = [json.loads(Path(f).read_text()) for f in metrics_files]
    notes = [f"{name} n/a: {note}" for key, name in (("fid_note", "FID"), ("fid_poster_note", "FID (poster protocol)"))
             for note in sorted({r.get(key) for r in runs if r.get(key)})]
    notes += [f"FRD: {r['frd_note']}" for r in runs if r.get("frd_note")]
    notes += [f"Quality flags, {r['label']}: " + "; ".join(r["quality_flags"]) + "." for r in runs if r.get("quality_flags")]
    notes += [f"{r['label']}: {r['n_dropped_empty']} source test slice(s) dropped before sampling: their masks kept fewer "
              "than preprocess.min_foreground organ pixels once the organs the target model never saw were set to "
              f"background ({r['n_slices']} slices sampled and evaluated)."
              for r in runs if r.get("mode") == "multimodal" and r.get("n_dropped_empty") is not None]
    if not all(r.get("oracle") for r in runs):
        notes.append("Oracle rows n/a: oracle renders exist only for the embedded phantom (dataset.source: phantom).")
    subset = "all test slices" if max_slices <= 0 else (
        f"at most {max_slices} test slices per run (evaluation.max_slices), a seeded subset stratified by case and view")
    notes.append(f"Generations and metrics use {subset}; multi-modal runs are compared with the target modality's real "
                 "test slices. Rows marked (poster protocol) follow the poster authors' eval.py (see README, Metrics).")
    return notes


def quality_warnings(metrics_files: Sequence[str | Path]) -> list[str]:
    """The workflow's end-of-run warnings: one line per quality flag of every run that has one.

    Args:
        metrics_files: the runs' metrics JSON files; files that do not exist (runs not evaluated yet) are
            skipped.

    Returns:
        Lines ``WARNING: <run> (<metrics file>): <flag>``; empty when every run passes.
    """
    lines = []
    for f in metrics_files:
        if Path(f).is_file():
            run = json.loads(Path(f).read_text())
            lines += [f"WARNING: {run.get('label', f)} ({f}): quality flag: {flag}" for flag in run.get("quality_flags") or []]
    return lines


def write_tables(metrics_files: Sequence[str | Path], csv: str | Path, md: str | Path, tex: str | Path,
                 long_csv: str | Path, notes: Sequence[str] = ()) -> pd.DataFrame:
    """Write the table as CSV, Markdown and LaTeX, plus the tidy long CSV (all atomically).

    Args:
        metrics_files: the runs' metrics JSON files, one column each.
        csv: the wide CSV to write.
        md: the Markdown table to write (``notes`` below it).
        tex: the LaTeX table to write.
        long_csv: the long CSV (run, metric, value) to write.
        notes: footnotes (:func:`table_notes`).

    Returns:
        The wide table (metrics x runs, formatted strings).
    """
    wide, long = build_tables(metrics_files)
    with atomic_path(csv) as tmp:
        wide.to_csv(tmp, index_label="metric")
    with atomic_path(md) as tmp:
        tmp.write_text(_markdown(wide) + "\n" + "".join(f"\n{n}\n" for n in notes))
    latex = wide.rename(index=lambda s: s.replace("↑", r"$\uparrow$").replace("↓", r"$\downarrow$").replace("_", r"\_"),
                        columns=lambda s: s.replace("→", r"$\to$")).map(lambda v: v.replace("⚠", r"$\triangle$"))
    with atomic_path(tex) as tmp:
        tmp.write_text(latex.to_latex(escape=False, column_format="l" + "r" * len(wide.columns)))
    with atomic_path(long_csv) as tmp:
        long.to_csv(tmp, index=False)
    return wide


def _markdown(wide: pd.DataFrame) -> str:
    header = "| metric | " + " | ".join(wide.columns) + " |"
    rule = "|---|" + "---:|" * len(wide.columns)
    rows = [f"| {name} | " + " | ".join(str(v) for v in row) + " |" for name, row in wide.iterrows()]
    return "\n".join([header, rule, *rows])
