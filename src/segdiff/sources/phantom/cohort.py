"""The cohort plan: AMOS case ids, their modality and their Tr/Va subset, without generating anything."""

from __future__ import annotations

import re

import numpy as np

__all__ = ["CT_OFFSET", "MRI_OFFSET", "case_number", "phantom_cases"]

CT_OFFSET = 1
"""Case number of the first CT case (``amos_0001``); AMOS ids below 500 are CT."""
MRI_OFFSET = 501
"""Case number of the first MRI case (``amos_0501``); AMOS ids from 500 on are MRI."""

_CASE_RE = re.compile(r"^amos_(\d{4})$")


def case_number(case: str) -> int:
    """The number of an AMOS case id (``'amos_0503'`` -> ``503``).

    Args:
        case: AMOS case id.

    Returns:
        The four-digit number of the id.

    Raises:
        ValueError: If ``case`` is not of the form ``amos_NNNN``.
    """
    match = _CASE_RE.match(case)
    if match is None:
        raise ValueError(f"case id '{case}': expected 'amos_NNNN' (four digits)")
    return int(match.group(1))


def _check_count(name: str, value: int, limit: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value <= limit:
        raise ValueError(f"{name} must be an integer in [0, {limit}], got {value!r}")
    return int(value)


def phantom_cases(n_ct: int, n_mri: int, val_fraction: float = 0.2) -> list[dict]:
    """The cohort plan, without generating anything.

    Args:
        n_ct: number of CT cases (``amos_0001``, ``amos_0002``, ...).
        n_mri: number of MRI cases (``amos_0501``, ``amos_0502``, ...).
        val_fraction: fraction of each modality's cases put in the AMOS validation subset: the
            last ``round(val_fraction * n)`` cases of each modality, but never all of them when
            ``n > 1``.

    Returns:
        One dict per case, CT first, in id order, with keys ``case``, ``modality``
        (``'ct'``/``'mri'``), ``subset`` (``'Tr'``/``'Va'``), ``image`` and ``label`` (paths
        relative to the dataset root, e.g. ``'imagesTr/amos_0001.nii.gz'``).

    Raises:
        ValueError: If a count is not an integer in range, or ``val_fraction`` is outside [0, 1].
    """
    n_ct = _check_count("n_ct", n_ct, MRI_OFFSET - 2 - CT_OFFSET + 1)
    n_mri = _check_count("n_mri", n_mri, 9999 - MRI_OFFSET + 1)
    if not 0.0 <= float(val_fraction) <= 1.0:
        raise ValueError(f"val_fraction must be in [0, 1], got {val_fraction!r}")
    cases: list[dict] = []
    for modality, n, offset in (("ct", n_ct, CT_OFFSET), ("mri", n_mri, MRI_OFFSET)):
        n_va = round(float(val_fraction) * n)
        if n > 1:
            n_va = min(n_va, n - 1)
        for i in range(n):
            case = f"amos_{offset + i:04d}"
            subset = "Va" if i >= n - n_va else "Tr"
            cases.append(
                {
                    "case": case,
                    "modality": modality,
                    "subset": subset,
                    "image": f"images{subset}/{case}.nii.gz",
                    "label": f"labels{subset}/{case}.nii.gz",
                }
            )
    return cases
