"""Label spaces: the label map (id -> organ name) and the optional remap from a source dataset's ids.

Both are small TSV files. A config value is either the name of a built-in table shipped in
``segdiff/resources`` (``amos15``, ``totalsegmentator_to_amos``) or a path to the user's own file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from segdiff.core.errors import InputError

log = logging.getLogger(__name__)

__all__ = ["LabelMap", "Remap", "load_label_map", "load_remap", "builtin_table"]


def builtin_table(kind: str, name_or_path: str | Path) -> Path:
    """Resolve a built-in table name or return the given path.

    Args:
        kind: the resource folder, ``labels`` or ``remaps``.
        name_or_path: a built-in name (``resources/<kind>/<name>.tsv``) or a path.

    Returns:
        The built-in table's path, else ``name_or_path`` as a path.
    """
    candidate = resources.files("segdiff") / "resources" / kind / f"{name_or_path}.tsv"
    if candidate.is_file():
        return Path(str(candidate))
    return Path(name_or_path)


def _read_table(path: Path, columns: list[str]) -> pd.DataFrame:
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, comment="#")
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise InputError(path, f"not a readable TSV ({err})") from err
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise InputError(path, f"missing column(s) {missing}; expected {columns}")
    for col in columns:
        if col.endswith("id"):
            bad = table[~table[col].str.fullmatch(r"\d+")]
            if len(bad):
                raise InputError(path, f"column '{col}' must hold non-negative integers, got {bad[col].iloc[0]!r}")
            table[col] = table[col].astype(int)
    return table


@dataclass(frozen=True)
class LabelMap:
    """Target label space: foreground ids 1..K (not necessarily contiguous) with names; 0 is background."""

    names: dict[int, str]

    @property
    def ids(self) -> list[int]:
        return sorted(self.names)

    @property
    def max_id(self) -> int:
        return max(self.names)

    @property
    def body_id(self) -> int:
        """The body envelope's id (``preprocess.body``): one above the largest organ id (16 for ``amos15``).

        The one definition of that id: masks with the envelope carry it where a pixel is body and no
        organ, and a diffusion model trained on them has ``body_id + 1`` mask channels.
        """
        return self.max_id + 1

    def check(self, label: np.ndarray, source: str | Path) -> None:
        """Check that a label array holds only ids of the map (or 0).

        Args:
            label: non-negative integer label ids.
            source: the file (or key) named in the error.

        Raises:
            InputError: ``label`` holds ids outside the map, naming ``source`` and the ids.
        """
        known = np.zeros(max(int(label.max(initial=0)), self.max_id) + 1, dtype=bool)
        known[[0, *self.ids]] = True
        unknown_voxels = ~known[label]  # one byte per voxel, not a histogram in int64
        if unknown_voxels.any():
            unknown = np.unique(label[unknown_voxels]).tolist()
            raise InputError(source, f"label values {unknown} are not in the label map (known ids: {self.ids})")


@dataclass(frozen=True)
class Remap:
    """Source label id -> target label id; ids not listed become background."""

    table: dict[int, int]

    def apply(self, label: np.ndarray, source: str | Path = "") -> np.ndarray:
        """Map source ids to target ids; logs how many voxels became background.

        Args:
            label: non-negative integer source ids.
            source: the file named in the log line.

        Returns:
            uint8 target ids, the shape of ``label``.
        """
        lut = np.zeros(max(int(label.max(initial=0)), max(self.table)) + 1, dtype=np.uint8)
        for src, tgt in self.table.items():
            lut[src] = tgt
        out = lut[label]
        dropped = np.count_nonzero((label != 0) & (out == 0))
        if dropped:
            unmapped = sorted(set(np.unique(label[(label != 0) & (out == 0)]).tolist()))
            log.info("%s: %d voxels with %d unmapped source ids %s set to background", source, dropped, len(unmapped), unmapped)
        return out


def load_label_map(name_or_path: str | Path) -> LabelMap:
    """Read a label map TSV with columns ``id`` and ``name`` (built-in: ``amos15``)."""
    path = builtin_table("labels", name_or_path)
    table = _read_table(path, ["id", "name"])
    if (table["id"] == 0).any():
        raise InputError(path, "id 0 is reserved for background; list foreground classes only")
    if table["id"].duplicated().any():
        raise InputError(path, f"duplicate id {table['id'][table['id'].duplicated()].iloc[0]}")
    if table["id"].max() > 255:
        raise InputError(path, "ids above 255 are not supported (masks are stored as uint8)")
    return LabelMap(dict(zip(table["id"], table["name"])))


def load_remap(name_or_path: str | Path, labels: LabelMap) -> Remap:
    """Read a remap TSV with columns ``source_id`` and ``target_id``.

    Args:
        name_or_path: a built-in name (e.g. ``totalsegmentator_to_amos``) or a path.
        labels: the target label map every ``target_id`` must belong to (or be 0).

    Returns:
        The remap.

    Raises:
        InputError: an unreadable table, a source id mapped twice or a target id outside ``labels``.
    """
    path = builtin_table("remaps", name_or_path)
    table = _read_table(path, ["source_id", "target_id"])
    if table["source_id"].duplicated().any():
        raise InputError(path, f"source id {table['source_id'][table['source_id'].duplicated()].iloc[0]} is mapped twice")
    unknown = sorted(set(table["target_id"]) - set(labels.ids) - {0})
    if unknown:
        raise InputError(path, f"target ids {unknown} are not in the label map")
    return Remap(dict(zip(table["source_id"], table["target_id"])))
