"""Tissue classes of the phantom, their nominal CT/MRI intensities, and its AMOS organ labels.

Labels are AMOS ids (``resources/labels/amos15.tsv``, read through :mod:`segdiff.core.labels`),
uint8, 0 background. MRI cases carry ids 1-13 only (AMOS MRI has no bladder / prostate-uterus
labels; the tissue is still rendered).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from segdiff.core.labels import load_label_map

__all__ = ["MRI_MAX_LABEL", "TISSUES", "Tissue", "amos_labels"]

MRI_MAX_LABEL = 13
"""Highest AMOS label id present in MRI cases."""


@dataclass(frozen=True)
class Tissue:
    """Nominal intensities of one tissue class.

    Attributes:
        name: tissue name.
        ct: nominal CT value in Hounsfield units.
        mri: nominal T1-like MRI value in arbitrary units (fat ~ 1000).
        texture: amplitude (HU) of the smooth within-tissue texture in CT; MRI uses
            ``texture / 200`` as a relative amplitude.
        enhancing: whether the value follows the per-case contrast-phase factor in CT.
    """

    name: str
    ct: float
    mri: float
    texture: float = 0.0
    enhancing: bool = False


TISSUES: tuple[Tissue, ...] = (
    Tissue("air", -1000.0, 0.0),
    Tissue("lung", -850.0, 30.0, 15.0),
    Tissue("gas", -950.0, 10.0),
    Tissue("subcutaneous_fat", -105.0, 1000.0, 4.0),
    Tissue("visceral_fat", -95.0, 920.0, 4.0),
    Tissue("muscle", 50.0, 330.0, 5.0),
    Tissue("bone", 700.0, 450.0, 60.0),
    Tissue("disc", 90.0, 260.0, 5.0),
    Tissue("csf", 15.0, 110.0),
    Tissue("bowel", 30.0, 300.0, 8.0),
    Tissue("heart", 150.0, 220.0, 6.0, True),
    Tissue("artery", 180.0, 90.0, 4.0, True),
    Tissue("liver", 60.0, 560.0, 6.0),
    Tissue("spleen", 50.0, 420.0, 6.0),
    Tissue("kidney_cortex", 160.0, 500.0, 6.0, True),
    Tissue("kidney_medulla", 110.0, 330.0, 6.0, True),
    Tissue("gall_bladder", 10.0, 130.0, 2.0),
    Tissue("esophagus", 40.0, 340.0, 4.0),
    Tissue("stomach", 20.0, 250.0, 6.0),
    Tissue("aorta", 180.0, 90.0, 4.0, True),
    Tissue("postcava", 130.0, 110.0, 4.0, True),
    Tissue("pancreas", 45.0, 600.0, 8.0),
    Tissue("adrenal", 30.0, 450.0, 4.0),
    Tissue("duodenum", 35.0, 310.0, 6.0),
    Tissue("bladder", 5.0, 100.0, 2.0),
    Tissue("prostate", 40.0, 350.0, 5.0),
    Tissue("uterus", 60.0, 380.0, 6.0),
    Tissue("rectum", 25.0, 280.0, 8.0),
)
"""The tissue classes of the phantom with their nominal CT (HU) and MRI (T1-like) values."""

_T = {t.name: i for i, t in enumerate(TISSUES)}
_MRI_EXCLUDED = ("bladder", "prostate/uterus")


@lru_cache(maxsize=1)
def _labels_table() -> tuple[tuple[int, str], ...]:
    return tuple(load_label_map("amos15").names.items())


def amos_labels() -> dict[int, str]:
    """The 15 AMOS organ labels as ``{id: name}`` (from ``resources/labels/amos15.tsv``)."""
    return dict(_labels_table())


def _label_ids() -> dict[str, int]:
    return {name: ident for ident, name in _labels_table()}
