"""The body envelope (``preprocess.body``), off against on: two finished studies compared run by run.

Give it two study folders that differ in ``preprocess.body.mode`` alone (off, then threshold or sheet), each
with ``results/evaluation/{run}/metrics.json``. Per run it prints, and writes as Markdown, what the envelope
is meant to change and what it must not break:

- diversity outside the organs, generations and oracle renders (``diversity_outside_gen``,
  ``diversity_outside_oracle``; their ratio): the body outline the model no longer invents. A metrics file
  without them (an older evaluation) gets them recomputed from its ``arrays.npz`` (``generated``, ``oracle``,
  ``mask``) with :func:`segdiff.evaluation.metrics.diversity`, organs = the ids of ``--labels``;
- diversity inside the organs (``diversity_gen``, ``diversity_oracle``, ``diversity_ratio``);
- Dice_gen / Dice_orig (``dice_ratio``), FRD (``frd``, ``frd_oracle``).

    python bench/bench_body.py STUDY_OFF STUDY_ON                        # prints the tables, writes bench_body.md
    python bench/bench_body.py STUDY_OFF STUDY_ON --out docs/results/body_envelope.md --labels amos15

Plain Python (argparse, json); numpy and segdiff only for the recomputation.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

#: (row label, metrics key): the rows of each run's table; a key ending in ``_ratio`` that a file lacks is
#: the ratio of the two rows above it
ROWS = [
    ("diversity outside organs, generated", "diversity_outside_gen"),
    ("diversity outside organs, oracle", "diversity_outside_oracle"),
    ("diversity outside organs, ratio", "diversity_outside_ratio"),
    ("diversity inside organs, generated", "diversity_gen"),
    ("diversity inside organs, oracle", "diversity_oracle"),
    ("diversity inside organs, ratio", "diversity_ratio"),
    ("Dice_gen / Dice_orig", "dice_ratio"),
    ("FRD, generated", "frd"),
    ("FRD, oracle", "frd_oracle"),
]


def _number(value) -> float | None:
    """A finite float, or None (absent, null, NaN)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _outside_from_arrays(arrays_path: Path, labels: str) -> dict[str, float | None]:
    """``diversity_outside_gen`` and ``_oracle`` recomputed from a run's ``arrays.npz``."""
    import numpy as np

    from segdiff.core.labels import load_label_map
    from segdiff.evaluation.metrics import diversity

    organs = load_label_map(labels).ids
    with np.load(arrays_path) as z:
        out = {"diversity_outside_gen": diversity(z["generated"], z["mask"], organs=organs)["outside"]}
        if "oracle" in z.files:
            out["diversity_outside_oracle"] = diversity(z["oracle"], z["mask"], organs=organs)["outside"]
    return out


def study_metrics(study: Path, labels: str = "amos15") -> dict[str, dict[str, float | None]]:
    """The table's metrics of every run of a finished study.

    Args:
        study: the study folder (holding ``results/evaluation/{run}/metrics.json``).
        labels: the label map whose ids are the organs, for a recomputation from ``arrays.npz``.

    Returns:
        run -> metrics key of :data:`ROWS` -> value (None where unknown).

    Raises:
        SystemExit: a folder without any ``metrics.json``.
    """
    files = sorted(Path(study).glob("results/evaluation/*/metrics.json"))
    if not files:
        raise SystemExit(f"{study}: no results/evaluation/*/metrics.json (is it a finished study?)")
    runs = {}
    for path in files:
        metrics = json.loads(path.read_text())
        if "diversity_outside_gen" not in metrics and (path.parent / "arrays.npz").is_file():
            metrics.update(_outside_from_arrays(path.parent / "arrays.npz", labels))
        values = {key: _number(metrics.get(key)) for _, key in ROWS}
        for key, (num, den) in (("diversity_outside_ratio", ("diversity_outside_gen", "diversity_outside_oracle")),
                                ("diversity_ratio", ("diversity_gen", "diversity_oracle"))):
            if values[key] is None and values[num] is not None and values[den]:
                values[key] = values[num] / values[den]
        runs[path.parent.name] = values
    return runs


def _cell(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


def markdown(off: dict, on: dict, names: tuple[str, str] = ("off", "on")) -> str:
    """One Markdown table per run: each row's value off, on, and on − off.

    Args:
        off: :func:`study_metrics` of the study without the envelope.
        on: :func:`study_metrics` of the study with it.
        names: the two columns' headers.

    Returns:
        The tables, a ``### run`` heading each (runs of either study, in order).
    """
    parts = []
    for run in sorted(set(off) | set(on)):
        a, b = off.get(run, {}), on.get(run, {})
        lines = [f"### {run}", "", f"| metric | {names[0]} | {names[1]} | on − off |", "|---|---:|---:|---:|"]
        for label, key in ROWS:
            x, y = a.get(key), b.get(key)
            lines.append(f"| {label} | {_cell(x)} | {_cell(y)} | {_cell(None if x is None or y is None else y - x)} |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> dict:
    """Compare two studies; print the tables and write them to ``--out``.

    Args:
        argv: the command line (``sys.argv[1:]`` when None).

    Returns:
        ``{"off": ..., "on": ...}``: :func:`study_metrics` of each study.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("off", type=Path, help="finished study folder with preprocess.body.mode off")
    parser.add_argument("on", type=Path, help="the same study with the envelope on")
    parser.add_argument("--out", type=Path, default=Path("bench_body.md"), help="the Markdown file to write")
    parser.add_argument("--labels", default="amos15", help="label map whose ids are the organs (recomputation only)")
    args = parser.parse_args(argv)
    result = {"off": study_metrics(args.off, args.labels), "on": study_metrics(args.on, args.labels)}
    text = f"# Body envelope: {args.off} (off) vs {args.on} (on)\n\n" + markdown(result["off"], result["on"])
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(args.out)  # atomically: a half-written table never stands in for a result
    return result


if __name__ == "__main__":
    main()
