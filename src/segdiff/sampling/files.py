"""The generation file: what a sampling run writes, reading it, and the merge of a run's chunk files.
Nothing here needs torch: the gather and figure jobs that only read and write these files start in well
under a second instead of importing the models.

Output ``.npz`` (one per run and mode): ``generated`` float32 (N, k, H, W) in [0, 1],
``original`` float32 (N, H, W) (the real slice the mask belongs to; for multi-modal it is of the
*source* modality), ``mask`` uint8 (N, H, W), ``case`` (N,) str, ``slice`` (N,) int32,
``view`` (N,) str, ``seed`` int, and ``info`` (a JSON string: mode, model, sampler settings, and for a
multi-modal run ``source``, the modality of its masks and originals, ``classes_set_to_background`` and
``dropped_empty``, the source slices it dropped).

A run's sampling can be split over jobs (``sampling.chunks``, Snakemake's scatter/gather):
:func:`~segdiff.sampling.experiments.sample_chunk` samples one contiguous part of the test subset
(:func:`~segdiff.sampling.chunks.chunk_bounds`) into a *chunk file* (a generation file of that part
plus ``part``, a JSON record of where it sits in the subset), and :func:`merge_chunks` checks the
parts fit together and writes the run's files, equal array for array (``info`` included) to what the
unsplit :func:`~segdiff.sampling.experiments.sample_run` writes. A multi-modal chunk holds fewer
slices than its bounds when it dropped some; its ``part`` lists them (``dropped``: subset position,
case, view, slice) so the merge still checks the whole subset.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segdiff.core.atomic import atomic_path
from segdiff.core.errors import InputError
from segdiff.core.labels import LabelMap
from segdiff.report.figures import ORIGINAL, generation_grid_figure

__all__ = ["MODES", "GatherJob", "write_generation", "read_generation", "first_column_title", "draw_grids",
           "subset_digest", "merge_chunks", "gather_run"]

#: the experiments a generation file can hold (:mod:`segdiff.sampling.experiments`)
MODES = ("reconstruction", "multi_inference", "multimodal")


@dataclass(frozen=True)
class GatherJob:
    """The gather job of a run split into chunks (:func:`gather_run`).

    Attributes:
        parts: the chunk files of the run (:func:`~segdiff.sampling.experiments.sample_chunk`), in any order.
        labels: the label map the grids colour the masks with.
        out: the run's generation file.
        grid: its PNG grid.
        reconstruction: from a multi-inference run, the reconstruction file taken from it (generation 1).
        reconstruction_grid: the PNG grid of the reconstruction file.
        title: the grids' title (after the mode).
    """

    parts: Sequence[str | Path]
    labels: LabelMap
    out: str | Path
    grid: str | Path
    reconstruction: str | Path | None = None
    reconstruction_grid: str | Path | None = None
    title: str = ""


def write_generation(arrays: dict, out: str | Path, reconstruction: str | Path | None = None) -> None:
    """Write a generation file; both files appear together, or neither.

    Args:
        arrays: the file's arrays (see the module docstring; ``info`` as a JSON string).
        out: the generation file to write.
        reconstruction: a multi-inference run's reconstruction file: generation 1 of each mask is written there
            too (``info`` mode ``reconstruction``, ``taken_from`` ``out``); None: no such file.
    """
    with contextlib.ExitStack() as pending:
        np.savez(pending.enter_context(atomic_path(out)), **arrays)
        if reconstruction is not None:
            info = {**json.loads(arrays["info"]), "mode": "reconstruction", "k": 1, "taken_from": str(out)}
            np.savez(pending.enter_context(atomic_path(reconstruction)),
                     **{**arrays, "generated": arrays["generated"][:, :1], "info": json.dumps(info)})


def read_generation(path: str | Path) -> dict:
    """Load a generation file written by :func:`~segdiff.sampling.experiments.run_generation`."""
    try:
        with np.load(path) as z:
            arrays = {key: z[key] for key in z.files}
    except (OSError, ValueError) as err:
        raise InputError(path, f"not a generation file ({err})") from err
    missing = {"generated", "original", "mask", "case", "slice"} - set(arrays)
    if missing:
        raise InputError(path, f"not a generation file (missing {sorted(missing)})")
    arrays["info"] = json.loads(str(arrays["info"]))
    return arrays


def first_column_title(info: dict) -> str:
    """What a generation file's ``original`` slices are: :data:`~segdiff.report.figures.ORIGINAL`, or for a
    multi-modal run the source modality's slices the masks come from, ``CT (source)``.

    Args:
        info: the file's ``info`` (parsed).

    Returns:
        The title of the column that shows them.
    """
    if info["mode"] != "multimodal":
        return ORIGINAL
    return f"{info.get('source', '').upper() or 'Source'} (source)"


def draw_grids(arrays: dict, label_map: LabelMap, grid: str | Path, reconstruction_grid: str | Path | None,
               title: str) -> None:
    """The PNG grid of a generation file (and of the reconstruction taken from it).

    Args:
        arrays: the file's arrays (``info`` as a JSON string).
        label_map: the label map the grids colour the masks with.
        grid: the PNG grid of the file: Original (titled by :func:`first_column_title`) | Segmentation |
            Generation 1..k.
        reconstruction_grid: the PNG grid of the reconstruction taken from it, or None.
        title: the grids' title (after the mode).
    """
    info = json.loads(arrays["info"])
    mode, first = info["mode"], first_column_title(info)
    generation_grid_figure(arrays["original"], arrays["mask"], arrays["generated"], label_map, grid,
                           f"{mode.replace('_', '-')}: {title}", original_title=first)
    if reconstruction_grid is not None:
        generation_grid_figure(arrays["original"], arrays["mask"], arrays["generated"][:, :1], label_map,
                               reconstruction_grid, f"reconstruction: {title}", original_title=first)


def subset_digest(case: np.ndarray, view: np.ndarray, slice_index: np.ndarray) -> str:
    """A fingerprint of an ordered list of slices, which a chunk file records of its run's whole subset.

    Args:
        case: the slices' cases.
        view: their views.
        slice_index: their slice indices.

    Returns:
        The SHA-256 of the case/view/slice lines.
    """
    keys = "\n".join(f"{c}/{v}/{int(s)}" for c, v, s in zip(case, view, slice_index))
    return hashlib.sha256(keys.encode()).hexdigest()


def _read_part(path: Path) -> dict:
    """A chunk file's small entries (not the images): part record, info, seed, case, slice, view."""
    try:
        with np.load(path) as z:
            if "part" not in z.files:
                raise InputError(path, "not a sampling chunk (no 'part' record; chunk files are written by sample_chunk)")
            return {"path": path, "part": json.loads(str(z["part"])), "info": json.loads(str(z["info"])),
                    "seed": int(z["seed"]), "case": z["case"], "slice": z["slice"], "view": z["view"]}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise InputError(path, f"not a sampling chunk ({err})") from err


def _check_parts(parts: list[dict]) -> list[dict]:
    """The parts in subset order, once checked to be the pieces of one subset sampled one way."""
    ref = parts[0]
    for p in parts[1:]:
        for what, mine, theirs in (
            ("the seed", p["seed"], ref["seed"]),
            *((f"info '{key}'", p["info"].get(key), ref["info"].get(key))
              for key in dict.fromkeys([*ref["info"], *p["info"]])
              if key not in ("classes_set_to_background", "dropped_empty")),
            ("the chunk count", p["part"]["chunks"], ref["part"]["chunks"]),
            ("the subset size", p["part"]["total"], ref["part"]["total"]),
        ):
            if mine != theirs:
                raise InputError(p["path"], f"{what} ({mine!r}) differs from that of {ref['path']} ({theirs!r}): "
                                            "the parts of one run come from one model, sampler and test subset")
        if p["part"]["subset"] != ref["part"]["subset"]:
            raise InputError(p["path"], f"cut from another test subset than {ref['path']} (other slice stores or "
                                        "evaluation.max_slices): the parts of one run come from one test subset")
    by_chunk: dict[int, dict] = {}
    for p in parts:
        other = by_chunk.setdefault(p["part"]["chunk"], p)
        if other is not p:
            raise InputError(p["path"], f"chunk {p['part']['chunk'] + 1} of {p['part']['chunks']} given twice "
                                        f"(also {other['path']})")
    chunks, total = ref["part"]["chunks"], ref["part"]["total"]
    ordered = [by_chunk[c] for c in sorted(by_chunk)]
    position = 0
    for p in ordered:
        start, stop = p["part"]["start"], p["part"]["stop"]
        dropped = p["part"].get("dropped", [])
        if len(p["case"]) + len(dropped) != stop - start or len(dropped) != p["info"].get("dropped_empty", 0):
            raise InputError(p["path"], f"holds {len(p['case'])} slices and lists {len(dropped)} dropped "
                                        f"({p['info'].get('dropped_empty', 0)} by its info), its record says "
                                        f"{start}..{stop - 1}")
        if start != position:
            gap = "missing" if start > position else "sampled twice"
            raise InputError(p["path"], f"chunk {p['part']['chunk'] + 1} of {chunks} starts at subset slice {start}, "
                                        f"the parts before it end at {position}: subset slices {min(start, position)}.."
                                        f"{max(start, position) - 1} are {gap}")
        position = stop
    missing = sorted(set(range(chunks)) - set(by_chunk))
    if position != total or missing:
        raise InputError(ordered[-1]["path"], f"the parts given end at subset slice {position} of {total}: chunk(s) "
                                              f"{[c + 1 for c in missing]} of {chunks} missing")
    digest = subset_digest(*(np.concatenate([_part_keys(p)[key] for p in ordered]) for key in ("case", "view", "slice")))
    if digest != ref["part"]["subset"]:
        raise InputError(ref["path"], "the slices of the parts are not the subset they record")
    return ordered


def _part_keys(p: dict) -> dict[str, np.ndarray]:
    """A part's case/view/slice of every subset position start..stop-1: its slices with the dropped ones put back."""
    start, stop = p["part"]["start"], p["part"]["stop"]
    dropped = {int(pos) - start: (case, view, int(index)) for pos, case, view, index in p["part"].get("dropped", [])}
    kept = iter(zip(p["case"], p["view"], p["slice"]))
    try:
        rows = [dropped[i] if i in dropped else next(kept) for i in range(stop - start)]
    except StopIteration:
        raise InputError(p["path"], f"its dropped slices are not positions {start}..{stop - 1} of the subset") from None
    case, view, index = zip(*rows) if rows else ((), (), ())
    return {"case": np.array(case, dtype=str), "view": np.array(view, dtype=str), "slice": np.array(index, dtype=np.int64)}


def merge_chunks(parts: Sequence[str | Path], out: str | Path, reconstruction: str | Path | None = None) -> dict:
    """Concatenate the chunk files of one run into its generation file ``out``, as the unsplit run writes them.

    The parts' ``classes_set_to_background`` are united and their ``dropped_empty`` summed; a multi-modal part
    that dropped slices holds fewer than its bounds, and the slices it lists as dropped count towards the
    subset the parts must make up. Memory: the merged arrays and one part.

    Args:
        parts: the chunk files of the run (:func:`~segdiff.sampling.experiments.sample_chunk`), given in any order (or a single path).
        out: the run's generation file to write.
        reconstruction: from a multi-inference run, the reconstruction file to write too (generation 1 of
            every mask; it appears together with ``out``); None: no such file.

    Returns:
        The merged arrays (``info`` as a JSON string).

    Raises:
        InputError: parts that do not fit together (another model, seed, k, sampler or subset; a chunk
            missing or given twice), naming the file.
        ValueError: no parts, or ``reconstruction`` from a run that is not multi-inference.
    """
    parts = [parts] if isinstance(parts, (str, Path)) else list(parts)
    if not parts:
        raise ValueError("no chunk files to merge")
    ordered = _check_parts([_read_part(Path(p)) for p in parts])
    info = ordered[0]["info"]
    if reconstruction is not None and info["mode"] != "multi_inference":
        raise ValueError("a reconstruction file can only be taken from a multi-inference run")
    # organs set to background and slices dropped anywhere in the subset (each part knows only its own)
    info["classes_set_to_background"] = sorted({c for p in ordered for c in p["info"]["classes_set_to_background"]})
    if "dropped_empty" in info:
        info["dropped_empty"] = sum(p["info"].get("dropped_empty", 0) for p in ordered)
    total = sum(len(p["case"]) for p in ordered)
    arrays: dict = {}
    position = 0
    for p in ordered:
        start, stop = position, position + len(p["case"])
        with np.load(p["path"]) as z:
            for key in ("generated", "original", "mask"):
                piece = z[key]
                if key not in arrays:
                    arrays[key] = np.empty((total, *piece.shape[1:]), piece.dtype)
                if piece.shape[1:] != arrays[key].shape[1:]:
                    raise InputError(p["path"], f"'{key}' of shape {piece.shape[1:]} per slice, other parts "
                                                f"{arrays[key].shape[1:]}")
                arrays[key][start:stop] = piece
        position = stop
    for key in ("case", "slice", "view"):
        arrays[key] = np.concatenate([p[key] for p in ordered])
    arrays["seed"] = np.int64(ordered[0]["seed"])
    arrays["info"] = json.dumps(info)
    write_generation(arrays, out, reconstruction)
    return arrays


def gather_run(job: GatherJob) -> None:
    """The workflow's gather job: :func:`merge_chunks`, then the PNG grids :func:`~segdiff.sampling.experiments.sample_run` draws.

    Args:
        job: the chunk files and the run's files.
    """
    arrays = merge_chunks(job.parts, job.out, job.reconstruction)
    draw_grids(arrays, job.labels, job.grid, job.reconstruction_grid, job.title)
