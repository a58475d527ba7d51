"""The case sheet: how every dataset reaches the pipeline.

A TSV with one row per volume and columns ``case``, ``modality`` (``ct`` | ``mri``), ``image``,
``label`` (paths to .nii/.nii.gz; relative paths resolve against the sheet's folder; the label may be
empty, or the column absent, when the masks come from a segmentation model), an optional ``split``
(``train`` | ``val`` | ``test``) and an optional ``body`` (the case's body mask, read with
``preprocess.body.mode`` sheet). Empty splits are filled by a seeded,
case-level split per modality (:func:`assign_splits`). Rows are validated against
``config/schemas/cases.schema.yaml``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import yaml

from segdiff.core.atomic import atomic_path
from segdiff.core.errors import InputError

__all__ = ["SPLITS", "read_case_sheet", "validate_case_sheet", "assign_splits", "sheet_from_amos", "write_case_sheet"]

SPLITS = ("train", "val", "test")
SHEET_COLUMNS = ["case", "modality", "image", "label", "split"]


def validate_case_sheet(sheet: pd.DataFrame, schema_path: str | Path, source: str | Path, check_files: bool = True,
                        labels_required: bool = True, body_required: bool = False) -> pd.DataFrame:
    """Validate rows against the schema, unique case ids and (optionally) that every file exists.

    Args:
        sheet: the case sheet, one row per volume (not modified).
        schema_path: the rows' JSON schema, a YAML file (``config/schemas/cases.schema.yaml``).
        source: the sheet's file, named in errors.
        check_files: check that every image (and, when labels are required, label) file exists.
        labels_required: False when the masks come from a segmentation model: the ``label`` column may
            then be empty or absent and is not checked.
        body_required: True with ``preprocess.body.mode`` sheet: every row needs a ``body`` mask file.

    Returns:
        A copy of the sheet with ``split`` and ``label`` columns, and ``body`` where required ("" where unset).

    Raises:
        InputError: for every problem, naming ``source``, the row and the column (a duplicated case id:
            the case).
    """
    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    sheet = sheet.copy()
    for column in ("split", "label", *(("body",) if body_required else ())):
        if column not in sheet.columns:
            sheet[column] = ""
    columns = ("image", "label") if labels_required else ("image",)
    columns += ("body",) if body_required else ()
    for i, row in enumerate(sheet.to_dict("records"), start=2):  # row 1 is the header
        error = jsonschema.exceptions.best_match(validator.iter_errors(row))
        if error is not None:
            column = error.path[0] if error.path else error.validator_value if error.validator == "required" else ""
            raise InputError(source, f"row {i} (case {row.get('case', '?')!r}), column {column!r}: {error.message}")
        if labels_required and not row["label"]:
            raise InputError(source, f"row {i} (case {row['case']!r}), column 'label': empty (a label volume is needed "
                             "unless dataset.mask_source is totalvibe)")
        if body_required and not row["body"]:
            raise InputError(source, f"row {i} (case {row['case']!r}), column 'body': empty "
                             "(preprocess.body.mode sheet needs a body mask of every case)")
        if check_files:
            for column in columns:
                if not Path(row[column]).is_file():
                    raise InputError(source, f"row {i} (case {row['case']!r}), column {column!r}: file not found: {row[column]}")
    duplicated = sheet["case"][sheet["case"].duplicated()]
    if len(duplicated):
        raise InputError(source, f"case {duplicated.iloc[0]!r} appears more than once")
    return sheet


def read_case_sheet(path: str | Path, schema_path: str | Path, check_files: bool = True, labels_required: bool = True,
                    body_required: bool = False) -> pd.DataFrame:
    """Read and validate a case sheet; image/label/body paths come back absolute.

    Args:
        path: the TSV file (``#`` starts a comment; relative paths resolve against its folder).
        schema_path: the rows' JSON schema, a YAML file.
        check_files: check that every image (and, when labels are required, label) file exists.
        labels_required: False when the masks come from a segmentation model (the ``label`` column may
            be empty or absent).
        body_required: every row needs a ``body`` mask file (``preprocess.body.mode`` sheet).

    Returns:
        The validated sheet (:func:`validate_case_sheet`), every cell a string.

    Raises:
        InputError: a missing or unreadable file, or a sheet :func:`validate_case_sheet` rejects.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "case sheet not found")
    try:
        sheet = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, comment="#")
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise InputError(path, f"not a readable TSV ({err})") from err
    for column in ("image", "label", "body"):
        if column in sheet.columns:
            sheet[column] = [str((path.parent / p).resolve()) if p else p for p in sheet[column]]
    return validate_case_sheet(sheet, schema_path, path, check_files, labels_required, body_required)


def _split_counts(n: int, fractions: Mapping[str, float]) -> dict[str, int]:
    """Largest-remainder rounding of ``n * fraction``; a split with a positive fraction gets at
    least one case when another split can spare one (priority train, test, val)."""
    total = sum(fractions.values())
    raw = {s: n * fractions.get(s, 0.0) / total for s in SPLITS}
    counts = {s: int(np.floor(v)) for s, v in raw.items()}
    for s in sorted(SPLITS, key=lambda s: raw[s] - counts[s], reverse=True)[: n - sum(counts.values())]:
        counts[s] += 1
    # small cohorts: make sure train, then test, then val get a case while there are cases to move
    for s in ("train", "test", "val"):
        if fractions.get(s, 0.0) > 0 and counts[s] == 0:
            donor = max(SPLITS, key=lambda d: counts[d])
            if counts[donor] > 1:
                counts[donor] -= 1
                counts[s] += 1
    return counts


def assign_splits(sheet: pd.DataFrame, fractions: Mapping[str, float], seed: int) -> pd.DataFrame:
    """Fill empty ``split`` cells with a seeded case-level split, separately per modality.

    Cases with an explicit split keep it; the remaining cases of each modality are shuffled with
    ``numpy.random.default_rng([seed, modality])`` (modality 0 for CT, 1 for MRI) and cut by
    ``fractions`` (largest remainder).

    Args:
        sheet: the case sheet (columns ``case``, ``modality``, ``split``; not modified).
        fractions: split (``train``, ``val``, ``test``) -> its share; the shares are divided by their sum.
        seed: the seed of the shuffle.

    Returns:
        A copy of the sheet with the empty splits of its CT and MRI cases filled.
    """
    sheet = sheet.copy()
    for m_index, modality in enumerate(("ct", "mri")):
        free = sheet.index[(sheet["modality"] == modality) & (sheet["split"] == "")]
        if len(free) == 0:
            continue
        order = np.random.default_rng([seed, m_index]).permutation(sorted(sheet.loc[free, "case"]))
        counts = _split_counts(len(order), fractions)
        labels = np.repeat(list(SPLITS), [counts[s] for s in SPLITS])
        sheet.loc[free, "split"] = sheet.loc[free, "case"].map(dict(zip(order, labels)))
    return sheet


def sheet_from_amos(root: str | Path) -> pd.DataFrame:
    """Case sheet of an AMOS22-layout folder (``dataset.json`` with ``training``/``validation``
    lists; ids < 500 are CT, >= 500 MRI). Splits are left empty for :func:`assign_splits`."""
    root = Path(root)
    meta_path = root / "dataset.json"
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError as err:
        raise InputError(meta_path, "not found (is this an AMOS-layout folder?)") from err
    except json.JSONDecodeError as err:
        raise InputError(meta_path, f"not valid JSON ({err})") from err
    rows = []
    for entry in meta.get("training", []) + meta.get("validation", []):
        case = Path(entry["image"]).name.removesuffix(".gz").removesuffix(".nii")
        try:
            number = int(case.rsplit("_", 1)[1])
        except (IndexError, ValueError) as err:
            raise InputError(meta_path, f"case name {case!r} does not end in an AMOS number") from err
        rows.append({
            "case": case,
            "modality": "ct" if number < 500 else "mri",
            "image": str((root / entry["image"]).resolve()),
            "label": str((root / entry["label"]).resolve()),
            "split": "",
        })
    if not rows:
        raise InputError(meta_path, "lists no labelled case")
    return pd.DataFrame(rows, columns=SHEET_COLUMNS)


def write_case_sheet(sheet: pd.DataFrame, path: str | Path) -> None:
    """Write a case sheet TSV atomically.

    Args:
        sheet: the case sheet.
        path: the TSV file to write (no index column).
    """
    with atomic_path(path) as tmp:
        sheet.to_csv(tmp, sep="\t", index=False)
