"""A deterministic, seeded synthetic abdominal phantom written in AMOS22 layout.

Every case is rendered from simple geometric primitives (ellipsoids, tubes along smoothed
polylines, elliptic body layers) evaluated in physical millimetres on the world coordinates of
the voxel centres, so the anatomy does not depend on the grid: a coarser or anisotropic grid
samples the same patient. Each organ is evaluated only inside its bounding box.

Conventions
-----------
* World coordinates are RAS+ (nibabel): ``+x`` towards the patient's right, ``+y`` anterior,
  ``+z`` superior. The phantom's anatomy frame is centred on the patient (the spine is
  posterior midline at ``x = 0``, the kidneys at ``z ~ 0``), and sits near the centre of the
  field of view.
* ``shape`` and ``spacing`` always describe the *canonical* (RAS) grid: ``shape[0]`` voxels of
  ``spacing[0]`` mm from right to left, etc. The stored voxel order differs per modality so that
  downstream reorientation is exercised: CT is stored in LPS order (axis codes ``('L','P','S')``,
  stored shape equal to ``shape``); MRI is stored as a coronal acquisition with axis codes
  ``('L','I','A')`` (stored shape ``(shape[0], shape[2], shape[1])``). ``nib.as_closest_canonical``
  returns ``shape`` and ``spacing`` for both.
* Labels are AMOS ids (``resources/labels/amos15.tsv``), uint8, 0 background. MRI cases carry
  ids 1-13 only (AMOS MRI has no bladder / prostate-uterus labels; the tissue is still rendered).
* CT is stored as int16 Hounsfield units, MRI as float32 T1-like arbitrary units (>= 0).
* Case ``amos_NNNN`` depends only on ``(seed, NNNN)`` (plus modality, shape and spacing): all
  random numbers come from ``np.random.default_rng([seed, NNNN])``, and every anatomical and
  contrast parameter is drawn before anything whose size depends on the grid.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform
from scipy.ndimage import gaussian_filter

from segdiff.core.atomic import atomic_path
from segdiff.core.labels import load_label_map

__all__ = [
    "CT_OFFSET",
    "MRI_OFFSET",
    "DEFAULT_SHAPE",
    "DEFAULT_SPACING",
    "CT_AXCODES",
    "MRI_AXCODES",
    "MRI_MAX_LABEL",
    "TISSUES",
    "Tissue",
    "amos_labels",
    "case_number",
    "phantom_cases",
    "generate_case",
    "mri_bias_field",
    "write_phantom_dataset",
]

CT_OFFSET = 1
"""Case number of the first CT case (``amos_0001``); AMOS ids below 500 are CT."""
MRI_OFFSET = 501
"""Case number of the first MRI case (``amos_0501``); AMOS ids from 500 on are MRI."""
DEFAULT_SHAPE: tuple[int, int, int] = (96, 80, 48)
"""Default canonical (RAS) grid shape."""
DEFAULT_SPACING: tuple[float, float, float] = (4.0, 4.0, 6.0)
"""Default canonical (RAS) voxel size in mm."""
CT_AXCODES: tuple[str, str, str] = ("L", "P", "S")
"""Stored voxel axis directions of CT volumes (DICOM-like LPS order)."""
MRI_AXCODES: tuple[str, str, str] = ("L", "I", "A")
"""Stored voxel axis directions of MRI volumes (coronal acquisition: voxel axes x, z, y)."""
MRI_MAX_LABEL = 13
"""Highest AMOS label id present in MRI cases."""

_MODALITIES = ("ct", "mri")
_CASE_RE = re.compile(r"^amos_(\d{4})$")
_RAS = ("R", "A", "S")


# --------------------------------------------------------------------------------------------
# Tissues and labels
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tissue:
    """Nominal intensities of one tissue class.

    Attributes
    ----------
    name : tissue name.
    ct : nominal CT value in Hounsfield units.
    mri : nominal T1-like MRI value in arbitrary units (fat ~ 1000).
    texture : amplitude (HU) of the smooth within-tissue texture in CT; MRI uses
        ``texture / 200`` as a relative amplitude.
    enhancing : whether the value follows the per-case contrast-phase factor in CT.
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


# --------------------------------------------------------------------------------------------
# Cohort plan
# --------------------------------------------------------------------------------------------


def case_number(case: str) -> int:
    """The number of an AMOS case id (``'amos_0503'`` -> ``503``).

    Raises
    ------
    ValueError
        If ``case`` is not of the form ``amos_NNNN``.
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

    Parameters
    ----------
    n_ct, n_mri : number of CT cases (``amos_0001``, ``amos_0002``, ...) and MRI cases
        (``amos_0501``, ``amos_0502``, ...).
    val_fraction : fraction of each modality's cases put in the AMOS validation subset: the
        last ``round(val_fraction * n)`` cases of each modality, but never all of them when
        ``n > 1``.

    Returns
    -------
    list of dict
        One dict per case, CT first, in id order, with keys ``case``, ``modality``
        (``'ct'``/``'mri'``), ``subset`` (``'Tr'``/``'Va'``), ``image`` and ``label`` (paths
        relative to the dataset root, e.g. ``'imagesTr/amos_0001.nii.gz'``).
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


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------

_Slices = tuple[slice, slice, slice]
_Region = tuple[_Slices, np.ndarray]


@dataclass(frozen=True)
class _Grid:
    """Voxel-centre coordinates (mm, anatomy frame, ascending) of the canonical grid."""

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.x.size, self.y.size, self.z.size)

    def box(self, lo: Sequence[float], hi: Sequence[float]) -> _Slices | None:
        """Index slices of the voxels with centres in ``[lo, hi]``; None when empty."""
        out = []
        for c, a, b in zip((self.x, self.y, self.z), lo, hi):
            i0 = int(np.searchsorted(c, a, side="left"))
            i1 = int(np.searchsorted(c, b, side="right"))
            if i1 <= i0:
                return None
            out.append(slice(i0, i1))
        return (out[0], out[1], out[2])

    def coords(self, sl: _Slices | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable coordinate arrays ``(X[:,1,1], Y[1,:,1], Z[1,1,:])`` of a box."""
        sl = sl or (slice(None),) * 3
        return (
            self.x[sl[0]][:, None, None],
            self.y[sl[1]][None, :, None],
            self.z[sl[2]][None, None, :],
        )


@dataclass(frozen=True)
class _Waves:
    """A smooth random field: a sum of plane waves ``sum_k a_k cos(k_k . p + phi_k)``."""

    k: np.ndarray  # (K, 3), radians per unit length
    phase: np.ndarray  # (K,)
    amp: np.ndarray  # (K,)

    def __call__(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Evaluate at broadcastable coordinates (small boxes)."""
        out = np.zeros(np.broadcast_shapes(np.shape(x), np.shape(y), np.shape(z)))
        for (kx, ky, kz), ph, a in zip(self.k, self.phase, self.amp):
            out += a * np.cos(kx * x + ky * y + kz * z + ph)
        return out

    def on_grid(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Evaluate on the tensor grid of 1D coordinates ``x, y, z`` (separable, fast)."""
        coef = (self.amp * np.exp(1j * self.phase))[:, None]
        cx = (coef * np.exp(1j * np.outer(self.k[:, 0], x))).astype(np.complex64)
        cy = np.exp(1j * np.outer(self.k[:, 1], y)).astype(np.complex64)
        cz = np.exp(1j * np.outer(self.k[:, 2], z)).astype(np.complex64)
        xy = (cx[:, :, None] * cy[:, None, :]).reshape(len(self.amp), -1)
        return np.ascontiguousarray((xy.T @ cz).real).reshape(x.size, y.size, z.size)


def _random_waves(rng: np.random.Generator, n: int, wavelength: tuple[float, float], unit_variance: bool) -> _Waves:
    direction = rng.normal(size=(n, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True) + 1e-12
    lam = rng.uniform(wavelength[0], wavelength[1], n)
    phase = rng.uniform(0.0, 2.0 * np.pi, n)
    amp = np.full(n, np.sqrt(2.0 / n) if unit_variance else 1.0 / n)
    return _Waves(direction * (2.0 * np.pi / lam)[:, None], phase, amp)


def _rotation(degrees: Sequence[float]) -> np.ndarray:
    """Rotation matrix ``Rz @ Ry @ Rx`` for angles (degrees) about x, y, z."""
    ax, ay, az = np.deg2rad(degrees)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass(frozen=True)
class _Ellipsoid:
    """An ellipsoid (local axes rotated by ``angles``), its surface perturbed by ``deform``."""

    center: np.ndarray
    radii: np.ndarray
    angles: tuple[float, float, float] = (0.0, 0.0, 0.0)
    deform: _Waves | None = None
    amount: float = 0.0

    def region(self, grid: _Grid) -> _Region | None:
        rot = _rotation(self.angles)
        half = np.sqrt((rot**2) @ (self.radii**2)) * (1.0 + self.amount)
        sl = grid.box(self.center - half, self.center + half)
        if sl is None:
            return None
        x, y, z = grid.coords(sl)
        dx, dy, dz = x - self.center[0], y - self.center[1], z - self.center[2]
        u = (rot[0, 0] * dx + rot[1, 0] * dy + rot[2, 0] * dz) / self.radii[0]
        v = (rot[0, 1] * dx + rot[1, 1] * dy + rot[2, 1] * dz) / self.radii[1]
        w = (rot[0, 2] * dx + rot[1, 2] * dy + rot[2, 2] * dz) / self.radii[2]
        rho2 = u * u + v * v + w * w
        if self.deform is not None and self.amount > 0:
            return sl, rho2 <= (1.0 + self.amount * self.deform(u, v, w)) ** 2
        return sl, rho2 <= 1.0

    def scaled(self, factor: float) -> _Ellipsoid:
        return _Ellipsoid(self.center, self.radii * factor, self.angles, self.deform, self.amount)


def _chaikin(points: np.ndarray, iterations: int = 2) -> np.ndarray:
    """Corner-cutting subdivision of a polyline (rows), keeping both end points."""
    for _ in range(iterations):
        if len(points) < 3:
            return points
        q = 0.75 * points[:-1] + 0.25 * points[1:]
        r = 0.25 * points[:-1] + 0.75 * points[1:]
        inner = np.empty((2 * (len(points) - 1), points.shape[1]))
        inner[0::2], inner[1::2] = q, r
        points = np.vstack([points[:1], inner[1:-1], points[-1:]])
    return points


@dataclass(frozen=True)
class _Tube:
    """A tube along a smoothed polyline; the radius is interpolated between vertices."""

    points: np.ndarray  # (n, 3)
    radii: np.ndarray  # (n,)

    def region(self, grid: _Grid) -> _Region | None:
        pr = _chaikin(np.column_stack([self.points, self.radii]))
        pts, rad = pr[:, :3], pr[:, 3]
        lo = (pts - rad[:, None]).min(axis=0)
        hi = (pts + rad[:, None]).max(axis=0)
        sl = grid.box(lo, hi)
        if sl is None:
            return None
        mask = np.zeros(tuple(s.stop - s.start for s in sl), dtype=bool)
        for i in range(len(pts) - 1):
            a, b = pts[i], pts[i + 1]
            rmax = max(rad[i], rad[i + 1])
            seg = grid.box(np.minimum(a, b) - rmax, np.maximum(a, b) + rmax)
            if seg is None:
                continue
            seg = tuple(slice(max(s.start, t.start), min(s.stop, t.stop)) for s, t in zip(seg, sl))
            if any(s.stop <= s.start for s in seg):
                continue
            x, y, z = grid.coords(seg)
            ab = b - a
            length2 = max(float(ab @ ab), 1e-9)
            dx, dy, dz = x - a[0], y - a[1], z - a[2]
            t = np.clip((dx * ab[0] + dy * ab[1] + dz * ab[2]) / length2, 0.0, 1.0)
            ex, ey, ez = dx - t * ab[0], dy - t * ab[1], dz - t * ab[2]
            r = rad[i] + t * (rad[i + 1] - rad[i])
            local = tuple(slice(s.start - t0.start, s.stop - t0.start) for s, t0 in zip(seg, sl))
            mask[local] |= ex * ex + ey * ey + ez * ez <= r * r
        return sl, mask


_Shape = _Ellipsoid | _Tube


@dataclass(frozen=True)
class _Paint:
    """One paint operation: ``shape`` gets ``tissue`` (and ``label`` when not empty)."""

    shape: _Shape
    tissue: str
    label: str = ""
    within: str = "cavity"  # "cavity" | "body"


@dataclass(frozen=True)
class _Anatomy:
    """Every geometric parameter of one case (drawn once, grid-independent)."""

    shift: np.ndarray  # patient centre relative to the FOV centre (mm)
    body_a: float
    body_b: float
    body_wobble: tuple[float, float]  # relative amplitude, phase of the z variation of body_a
    fat_lateral: float
    fat_ap: float
    muscle: float
    spine_y: float
    spine_radii: tuple[float, float]
    disc_phase: float
    rib_phase: float
    dome: float
    fill_waves: _Waves
    fill_threshold: float
    gas_waves: _Waves
    organs: tuple[_Paint, ...]
    muscles: tuple[_Paint, ...]
    bones: tuple[_Paint, ...]
    stomach_gas_level: float


# --------------------------------------------------------------------------------------------
# Anatomy sampling
# --------------------------------------------------------------------------------------------


class _Sampler:
    """Draws organ parameters; body-relative scaling of nominal positions."""

    def __init__(self, rng: np.random.Generator, sx: float, sy: float, size: float):
        self.rng, self.sx, self.sy, self.size = rng, sx, sy, size

    def offset(self, sd: float = 5.0, limit: float = 15.0) -> np.ndarray:
        return np.clip(self.rng.normal(0.0, sd, 3), -limit, limit)

    def pos(self, p: Sequence[float], sd: float = 5.0) -> np.ndarray:
        return np.array([p[0] * self.sx, p[1] * self.sy, p[2]]) + self.offset(sd)

    def scale(self, lo: float = 0.87, hi: float = 1.15) -> np.ndarray:
        return self.size * self.rng.uniform(lo, hi, 3)

    def angles(self, nominal: Sequence[float], sd: float = 6.0) -> tuple[float, float, float]:
        a = np.asarray(nominal, dtype=float) + np.clip(self.rng.normal(0.0, sd, 3), -2 * sd, 2 * sd)
        return (float(a[0]), float(a[1]), float(a[2]))

    def ellipsoid(
        self, center: Sequence[float], radii: Sequence[float], angles: Sequence[float] = (0, 0, 0), amount: float = 0.08
    ) -> _Ellipsoid:
        c = self.pos(center)
        r = np.asarray(radii, dtype=float) * self.scale()
        a = self.angles(angles)
        waves = _random_waves(self.rng, 4, (1.5, 4.0), unit_variance=False)
        return _Ellipsoid(c, r, a, waves, amount)

    def tube(self, points: Sequence[Sequence[float]], radii: Sequence[float], jitter: float = 4.0) -> _Tube:
        p = np.array([[q[0] * self.sx, q[1] * self.sy, q[2]] for q in points], dtype=float)
        p += self.offset(4.0, 10.0)
        p += np.clip(self.rng.normal(0.0, jitter, p.shape), -2 * jitter, 2 * jitter)
        r = np.asarray(radii, dtype=float) * self.size * self.rng.uniform(0.87, 1.15, len(radii))
        return _Tube(p, r)


def _sample_anatomy(rng: np.random.Generator) -> _Anatomy:
    """Draw one patient. The number of draws is fixed (independent of grid and modality)."""
    shift = np.array([rng.uniform(-8, 8), rng.uniform(-8, 8), rng.uniform(-8, 8)])
    body_a = 165.0 * rng.uniform(0.9, 1.1)
    body_b = 120.0 * rng.uniform(0.9, 1.1)
    wobble = (float(rng.uniform(0.0, 0.04)), float(rng.uniform(0, 2 * np.pi)))
    fat_lateral = float(rng.uniform(12.0, 30.0))
    fat_ap = float(rng.uniform(12.0, 30.0))
    muscle = float(rng.uniform(9.0, 14.0))
    sx, sy = body_a / 165.0, body_b / 120.0
    size = float(rng.uniform(0.93, 1.07))
    s = _Sampler(rng, sx, sy, size)
    spine_y = -45.0 * sy + float(rng.uniform(-4, 4))
    spine_radii = (22.0 * size, 17.0 * size)
    disc_phase = float(rng.uniform(0, 36.0))
    rib_phase = float(rng.uniform(0, 28.0))
    dome = 88.0 + float(rng.uniform(-8, 8))
    fill_waves = _random_waves(rng, 12, (30.0, 70.0), unit_variance=True)
    fill_threshold = float(rng.uniform(-0.5, 0.1))
    gas_waves = _random_waves(rng, 10, (15.0, 35.0), unit_variance=True)
    female = bool(rng.random() < 0.5)
    ys = spine_y / sy  # nominal (unscaled) y of the vertebral body

    # Organs in paint order (later ones win where they overlap). Nominal positions are in mm for
    # a 330 x 240 mm body; x and y are scaled with the body. ``ys`` keeps vessels on the spine.
    organs: list[_Paint] = []

    def organ(shape: _Shape, tissue: str, label: str = "") -> _Shape:
        organs.append(_Paint(shape, tissue, label))
        return shape

    organ(s.ellipsoid((-15, 30, 165), (55, 45, 40)), "heart")
    organ(s.tube([(0, ys + 5, -150), (0, ys + 8, -110), (-10, ys + 15, -75)], (14, 15, 13)), "rectum")
    for side in (1, -1):  # common iliac arteries (unlabelled)
        iliac = [(-15, ys + 31, -62), (side * 45, ys + 25, -105), (side * 70, ys + 45, -150)]
        organ(s.tube(iliac, (8, 7, 7)), "artery")
    organ(s.ellipsoid((60, -5, 55), (75, 80, 65), (0, 0, 10)), "liver", "liver")  # right lobe
    organ(s.ellipsoid((0, 35, 80), (55, 35, 35), (0, 0, -15)), "liver", "liver")  # left lobe
    organ(s.ellipsoid((-103, -30, 60), (24, 48, 50), (0, 10, -35)), "spleen", "spleen")
    kidneys: dict[int, _Ellipsoid] = {}
    for side, name, z0 in ((1, "right kidney", 0.0), (-1, "left kidney", 15.0)):
        # Upper pole tilted medially, hilum turned anteromedially; medulla inside the cortex.
        kidney = s.ellipsoid((side * 70, ys - 2, z0), (27, 24, 55), (0, -side * 12, side * 30), amount=0.05)
        kidneys[side] = organ(kidney, "kidney_cortex", name)
        organ(kidney.scaled(0.55), "kidney_medulla", name)
    stomach = organ(
        s.tube([(-55, 0, 95), (-68, 25, 62), (-42, 48, 32), (-5, 50, 24), (15, 40, 24)], (30, 32, 24, 17, 12), 5.0),
        "stomach",
        "stomach",
    )
    pancreas = [(28, 5, 5), (5, 15, 12), (-30, 12, 22), (-70, -12, 35)]  # head, neck, body, tail
    organ(s.tube(pancreas, (16, 11, 11, 10), 3.0), "pancreas", "pancreas")
    duodenum = [(15, 40, 24), (40, 25, 25), (50, 6, 10), (48, 2, -25), (20, 10, -40), (-10, 12, -40)]
    duodenum += [(-28, 12, -25), (-30, 15, -5)]  # C-loop around the pancreatic head
    organ(s.tube(duodenum, (10, 11, 11, 11, 11, 11, 10, 10), 3.0), "duodenum", "duodenum")
    organ(s.ellipsoid((45, 42, 5), (14, 16, 30), (25, 0, 0)), "gall_bladder", "gall bladder")
    for side, name in ((1, "right adrenal gland"), (-1, "left adrenal gland")):
        # On top of the kidney's upper pole, slightly anteromedial: follows the kidney.
        k = kidneys[side]
        centre = k.center + np.array([-side * 20.0 * sx, 14.0, 0.8 * k.radii[2] + 12.0]) + s.offset(2.0, 5.0)
        radii = np.array([8.0, 13.0, 17.0]) * s.scale()
        waves = _random_waves(rng, 4, (1.5, 4.0), unit_variance=False)
        organ(_Ellipsoid(centre, radii, s.angles((0, 0, side * 30)), waves, 0.05), "adrenal", name)
    organ(s.ellipsoid((0, 35, -100), (42, 32, 28)), "bladder", "bladder")
    if female:  # same number of draws either way
        organ(s.ellipsoid((0, -5, -88), (35, 20, 36), (-30, 0, 0)), "uterus", "prostate/uterus")
    else:
        organ(s.ellipsoid((0, 5, -125), (20, 16, 17)), "prostate", "prostate/uterus")
    ivc = [(22, ys + 31, -65), (22, ys + 33, 20), (24, ys + 38, 80), (28, ys + 45, 130)]
    organ(s.tube(ivc, (11, 12, 12, 13), 2.0), "postcava", "postcava")
    aorta = [(-15, ys + 31, -62), (-15, ys + 32, 0), (-14, ys + 32, 60), (-12, ys + 33, 150)]
    organ(s.tube(aorta, (10, 12, 12, 12), 2.0), "aorta", "aorta")
    esophagus = [(5, ys + 40, 155), (-3, ys + 45, 120), (-30, ys + 45, 100), (-50, 5, 95)]
    organ(s.tube(esophagus, (8, 8, 8, 9), 2.0), "esophagus", "esophagus")

    muscles: list[_Paint] = []
    for side in (1, -1):
        psoas = [(side * 30, ys + 3, 40), (side * 45, ys + 3, -40), (side * 60, ys + 22, -115)]
        paraspinal = [(side * 38, ys - 33, 150), (side * 38, ys - 33, -150)]
        muscles.append(_Paint(s.tube(psoas, (6, 19, 17), 2.0), "muscle", within="body"))
        muscles.append(_Paint(s.tube(paraspinal, (24, 24), 2.0), "muscle", within="body"))
    bones = [  # iliac wings
        _Paint(s.ellipsoid((side * 99, ys + 15, -100), (12, 45, 40), (0, 0, -side * 25), 0.05), "bone", within="body")
        for side in (1, -1)
    ]
    # Stomach gas rises anteriorly (supine): gas where y exceeds this level inside the stomach.
    front = float(np.max(stomach.points[:, 1] + stomach.radii))
    gas_level = front - float(rng.uniform(0.0, 15.0))
    return _Anatomy(
        shift=shift,
        body_a=float(body_a),
        body_b=float(body_b),
        body_wobble=wobble,
        fat_lateral=fat_lateral,
        fat_ap=fat_ap,
        muscle=muscle,
        spine_y=spine_y,
        spine_radii=spine_radii,
        disc_phase=disc_phase,
        rib_phase=rib_phase,
        dome=dome,
        fill_waves=fill_waves,
        fill_threshold=fill_threshold,
        gas_waves=gas_waves,
        organs=tuple(organs),
        muscles=tuple(muscles),
        bones=tuple(bones),
        stomach_gas_level=gas_level,
    )


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _render(grid: _Grid, anat: _Anatomy) -> tuple[np.ndarray, np.ndarray]:
    """Paint the tissue-class and AMOS-label volumes (canonical RAS order)."""
    ids = _label_ids()
    tissue = np.zeros(grid.shape, dtype=np.uint8)
    label = np.zeros(grid.shape, dtype=np.uint8)
    x, y, z = grid.coords()

    # Body: elliptic cross-section, flatter posteriorly, width varying slowly along z.
    a = anat.body_a * (1.0 + anat.body_wobble[0] * np.cos(2 * np.pi * z / 300.0 + anat.body_wobble[1]))
    b = np.where(y < 0, 0.9 * anat.body_b, anat.body_b)

    def inside(da: float, db: float) -> np.ndarray:
        return (x / (a - da)) ** 2 + (y / (b - db)) ** 2 <= 1.0

    body = inside(0.0, 0.0)
    under_fat = inside(anat.fat_lateral, anat.fat_ap)
    cavity = inside(anat.fat_lateral + anat.muscle, anat.fat_ap + anat.muscle)
    tissue[body] = _T["subcutaneous_fat"]
    tissue[under_fat] = _T["muscle"]

    # Abdominal content: bowel loops in visceral fat, with some gas.
    fill = anat.fill_waves.on_grid(grid.x, grid.y, grid.z)
    gas = anat.gas_waves.on_grid(grid.x, grid.y, grid.z)
    bowel = fill > anat.fill_threshold
    tissue[cavity] = _T["visceral_fat"]
    tissue[cavity & bowel] = _T["bowel"]
    tissue[cavity & bowel & (gas > 1.9)] = _T["gas"]

    # Lungs above the diaphragm domes (right dome higher), mediastinum spared.
    sl = grid.box((-1e4, -1e4, anat.dome - 30.0), (1e4, 1e4, 1e4))
    if sl is not None:
        X, Y, Z = grid.coords(sl)
        dome = anat.dome + 25.0 * np.exp(-(((np.abs(X) - 65.0) / 55.0) ** 2)) + 8.0 * (X > 0) + 0.15 * Y
        thorax = cavity[sl] & (Z > dome)
        mediastinum = (np.abs(X) < 30.0) & (Y > anat.spine_y - 10.0)
        tissue[sl][thorax] = _T["visceral_fat"]
        tissue[sl][thorax & ~mediastinum] = _T["lung"]

    def paint(op: _Paint, stomach_gas: float | None = None) -> None:
        reg = op.shape.region(grid)
        if reg is None:
            return
        s, m = reg
        m = m & (cavity[s] if op.within == "cavity" else body[s])
        tissue[s][m] = _T[op.tissue]
        if op.label:
            label[s][m] = ids[op.label]
        if stomach_gas is not None:
            _, Y, Z = grid.coords(s)
            tissue[s][m & (Y > stomach_gas) & (Z > 20.0)] = _T["gas"]

    for op in anat.muscles:
        paint(op)
    for op in anat.organs:
        paint(op, anat.stomach_gas_level if op.tissue == "stomach" else None)

    # Spine (vertebral bodies with discs, canal, posterior arch), sacrum tilted backwards.
    rx, ry = anat.spine_radii
    sl = grid.box((-40.0, anat.spine_y - 90.0, -1e4), (40.0, anat.spine_y + 30.0, 1e4))
    if sl is not None:
        X, Y, Z = grid.coords(sl)
        yc = anat.spine_y - 0.3 * np.clip(-60.0 - Z, 0.0, None)
        vb = (X / rx) ** 2 + ((Y - yc) / ry) ** 2 <= 1.0
        disc = vb & (np.mod(Z - anat.disc_phase, 36.0) < 8.0) & (Z > -70.0)
        yk = yc - ry - 10.0
        r2 = X**2 + (Y - yk) ** 2
        canal = (r2 <= 8.0**2) & (Z > -80.0)
        arch = (r2 <= 15.0**2) & (Y <= yk + 4.0) & ~canal
        spinous = (np.abs(X) <= 4.0) & (Y <= yk) & (Y >= yk - 32.0)
        bone = (vb & ~disc) | arch | spinous
        inb = body[sl]
        tissue[sl][bone & inb] = _T["bone"]
        tissue[sl][disc & inb] = _T["disc"]
        tissue[sl][canal & inb] = _T["csf"]
        label[sl][(bone | disc | canal) & inb] = 0

    # Ribs in the muscle wall of the upper abdomen, pelvic bones.
    sl = grid.box((-1e4, -1e4, 25.0), (1e4, 1e4, 1e4))
    if sl is not None:
        X, Y, Z = grid.coords(sl)
        wall = under_fat[sl] & ~cavity[sl]
        rib = wall & (np.mod(Z - anat.rib_phase, 28.0) < 9.0) & ~((np.abs(X) < 50.0) & (Y > 0)) & ~(np.abs(X) < 30.0)
        tissue[sl][rib] = _T["bone"]
    for op in anat.bones:
        reg = op.shape.region(grid)
        if reg is not None:
            s, m = reg
            m = m & body[s]
            tissue[s][m] = _T["bone"]
            label[s][m] = 0
    tissue[~body] = _T["air"]
    label[~body] = 0
    return tissue, label


def mri_bias_field(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, rng: np.random.Generator, amplitude: float = 0.2
) -> np.ndarray:
    """A smooth multiplicative MRI bias field in ``(1 - amplitude, 1 + amplitude)``.

    ``1 + amplitude * tanh(f)`` with ``f`` a random second-order polynomial of the normalised
    coordinates (``x / 150``, ``y / 120``, ``z / 150`` mm) whose linear part has a random
    direction and a strength of at least 0.6, so the field always varies by several percent
    across the body. Exactly nine numbers are drawn from ``rng``.

    Parameters
    ----------
    x, y, z : broadcastable world coordinates (mm) relative to the patient centre.
    rng : random generator.
    amplitude : maximal relative deviation from 1.

    Returns
    -------
    numpy.ndarray
        float32 field of the broadcast shape of ``x, y, z``.
    """
    d = rng.normal(size=3)
    d /= np.linalg.norm(d) + 1e-12
    d *= rng.uniform(0.6, 1.0)
    q = rng.normal(0.0, 0.25, 5)
    u = np.asarray(x, dtype=np.float32) / np.float32(150.0)
    v = np.asarray(y, dtype=np.float32) / np.float32(120.0)
    w = np.asarray(z, dtype=np.float32) / np.float32(150.0)
    d, q = d.astype(np.float32), q.astype(np.float32)
    # Grouped so that only the last sum has the full broadcast shape.
    fxz = d[0] * u + q[0] * u * u + d[2] * w + q[2] * w * w + q[3] * u * w
    fyz = d[1] * v + q[1] * v * v + q[4] * v * w
    f = fxz + fyz
    return (1.0 + amplitude * np.tanh(f)).astype(np.float32)


def _intensity_tables(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per-case CT (HU) and MRI values of every tissue (fixed number of draws)."""
    ct = np.array([t.ct for t in TISSUES])
    mri = np.array([t.mri for t in TISSUES])
    enhancing = np.array([t.enhancing for t in TISSUES])
    phase = rng.uniform(0.8, 1.2)  # contrast-phase factor for enhancing tissues
    ct = np.where(enhancing, 40.0 + (ct - 40.0) * phase, ct)
    sd = np.clip(0.03 * np.abs(ct), 3.0, 15.0)
    jitter = np.clip(rng.normal(0.0, 1.0, ct.size), -2.0, 2.0) * sd
    ct = ct + np.where(ct <= -900, 0.0, jitter)
    mri = mri * rng.uniform(0.93, 1.07, mri.size)
    return ct.astype(np.float32), mri.astype(np.float32)


def _nifti(data: np.ndarray, affine: np.ndarray, descrip: str) -> nib.Nifti1Image:
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    img.header["descrip"] = descrip.encode("ascii")[:79]
    return img


def _check_grid(shape: Sequence[int], spacing: Sequence[float]) -> tuple[tuple[int, int, int], np.ndarray]:
    if len(shape) != 3 or any(isinstance(n, bool) or int(n) != n or int(n) < 1 for n in shape):
        raise ValueError(f"shape must be three positive integers, got {tuple(shape)!r}")
    sp = np.asarray(spacing, dtype=float)
    if sp.shape != (3,) or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise ValueError(f"spacing must be three positive finite numbers (mm), got {tuple(spacing)!r}")
    return (int(shape[0]), int(shape[1]), int(shape[2])), sp


def generate_case(
    case: str,
    modality: str,
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    seed: int,
    render: int = 0,
) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """Render one phantom case, or an *oracle render* of it.

    Parameters
    ----------
    case : AMOS case id ``amos_NNNN``. By convention ids below 500 are CT and the others MRI,
        but ``modality`` decides the contrast.
    modality : ``'ct'`` or ``'mri'``.
    shape : canonical (RAS) grid shape; MRI is stored with permuted axes (see module notes).
    spacing : canonical (RAS) voxel size in mm. Anatomy is defined in mm, so any grid samples
        the same patient; a field of view smaller than the body simply cuts it.
    seed : cohort seed. The case depends only on ``(seed, NNNN)`` (and modality, shape,
        spacing), through ``np.random.default_rng([seed, NNNN])``.
    render : 0 for the case itself. ``r >= 1`` gives the r-th *oracle render*: a second scan
        of the same patient. The anatomy, the field of view and therefore the label volume are
        identical bit for bit; everything that is not anatomy is drawn afresh from
        ``np.random.default_rng([seed, NNNN, r])``: tissue intensities (contrast phase and
        per-tissue jitter), texture, blur, noise, MRI gain and bias field. Renders sample the
        true conditional distribution p(image | anatomy) that a generator should match.

    Returns
    -------
    (image, label) : tuple of nibabel.Nifti1Image
        Same shape and affine, qform/sform code 1 (scanner). CT image int16 HU in LPS voxel
        order; MRI image float32 (>= 0, Rician noise, bias field) in coronal ``('L','I','A')``
        order. Label uint8 AMOS ids (1-13 only for MRI).

    Raises
    ------
    ValueError
        For a malformed case id, an unknown modality, or an invalid shape or spacing.
    """
    number = case_number(case)
    if modality not in _MODALITIES:
        raise ValueError(f"modality must be one of {_MODALITIES}, got {modality!r}")
    shape, sp = _check_grid(shape, spacing)
    if isinstance(render, bool) or int(render) != render or render < 0:
        raise ValueError(f"render must be a non-negative integer, got {render!r}")
    rng = np.random.default_rng([int(seed), number])

    # 1. Everything that does not depend on the grid size: anatomy, geometry, contrast.
    anat = _sample_anatomy(rng)
    fov_centre = np.array([rng.uniform(-10, 10), rng.uniform(-40, 10), rng.uniform(-450, 50)])
    if render:  # an oracle render: same anatomy, fresh acquisition
        rng = np.random.default_rng([int(seed), number, int(render)])
    ct_values, mri_values = _intensity_tables(rng)
    texture = _random_waves(rng, 10, (12.0, 40.0), unit_variance=True)
    blur = float(rng.uniform(0.6, 0.8))
    ct_noise = float(rng.uniform(10.0, 18.0))
    mri_gain = float(rng.uniform(0.8, 1.25))
    mri_noise = float(rng.uniform(0.015, 0.03)) * 1000.0 * mri_gain
    bias_rng = np.random.default_rng(rng.integers(0, 2**63))

    # 2. The canonical grid: voxel centres in world mm and in the patient (anatomy) frame.
    n = np.asarray(shape)
    origin = fov_centre - 0.5 * (n - 1) * sp
    canonical = np.eye(4)
    canonical[:3, :3] = np.diag(sp)
    canonical[:3, 3] = origin
    centre = fov_centre + anat.shift
    grid = _Grid(*(origin[i] + sp[i] * np.arange(shape[i]) - centre[i] for i in range(3)))

    tissue, label = _render(grid, anat)
    tex_amp = np.array([t.texture for t in TISSUES], dtype=np.float32)
    tex = texture.on_grid(grid.x, grid.y, grid.z)
    if modality == "ct":
        img = ct_values[tissue] + tex_amp[tissue] * tex
        img = gaussian_filter(img, blur, mode="nearest")
        img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(ct_noise)
        data = np.clip(np.rint(img), -1024, 3071).astype(np.int16)
        codes = CT_AXCODES
    else:
        for name in _MRI_EXCLUDED:
            label[label == _label_ids()[name]] = 0
        img = mri_values[tissue] * mri_gain * (1.0 + (tex_amp[tissue] / 200.0) * tex)
        x, y, z = grid.coords()
        img *= mri_bias_field(x, y, z, bias_rng)
        img = gaussian_filter(img.astype(np.float32), blur, mode="nearest")
        n1 = rng.standard_normal(img.shape, dtype=np.float32)
        n2 = rng.standard_normal(img.shape, dtype=np.float32)
        s = np.float32(mri_noise)
        data = np.sqrt((img + s * n1) ** 2 + (s * n2) ** 2).astype(np.float32)
        codes = MRI_AXCODES

    # 3. Store in the modality's voxel order.
    transform = ornt_transform(axcodes2ornt(_RAS), axcodes2ornt(codes))
    affine = canonical @ inv_ornt_aff(transform, shape)
    data = np.ascontiguousarray(apply_orientation(data, transform))
    label = np.ascontiguousarray(apply_orientation(label, transform))
    tag = f"segdiff phantom {case} {modality} seed={int(seed)}" + (f" render={int(render)}" if render else "")
    return _nifti(data, affine, tag), _nifti(label, affine, tag + " label")


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------


def write_phantom_dataset(
    root: Path,
    n_ct: int,
    n_mri: int,
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    seed: int,
    val_fraction: float = 0.2,
) -> list[dict]:
    """Generate a phantom cohort in AMOS22 layout under ``root``.

    Writes ``imagesTr/``, ``labelsTr/``, ``imagesVa/``, ``labelsVa/`` (``amos_NNNN.nii.gz``) and
    ``dataset.json`` (AMOS22 style). Every file is written atomically, ``dataset.json`` last.
    Files already under ``root`` that are not part of the plan are left alone.

    Parameters
    ----------
    root : dataset root folder (created if needed).
    n_ct, n_mri, val_fraction : the cohort plan, see :func:`phantom_cases`.
    shape, spacing, seed : see :func:`generate_case`.

    Returns
    -------
    list of dict
        ``phantom_cases(n_ct, n_mri, val_fraction)``.
    """
    root = Path(root)
    cases = phantom_cases(n_ct, n_mri, val_fraction)
    _check_grid(shape, spacing)
    for c in cases:
        image, label = generate_case(c["case"], c["modality"], shape, spacing, seed)
        for img, rel in ((image, c["image"]), (label, c["label"])):
            with atomic_path(root / rel) as tmp:
                nib.save(img, tmp)
    entries = {
        subset: [{"image": f"./{c['image']}", "label": f"./{c['label']}"} for c in cases if c["subset"] == subset]
        for subset in ("Tr", "Va")
    }
    labels = {"0": "background", **{str(i): name for i, name in _labels_table()}}
    dataset = {
        "name": "AMOS-phantom",
        "description": (
            "Synthetic abdominal CT/MRI phantom in AMOS22 layout generated by segdiff.sources.phantom "
            f"(seed {int(seed)}, canonical shape {list(map(int, shape))}, spacing {list(map(float, spacing))} mm). "
            "Case ids below 500 are CT, the others MRI; MRI has labels 1-13 only."
        ),
        "reference": "segdiff synthetic phantom (not patient data)",
        "licence": "CC0",
        "release": "1.0",
        "tensorImageSize": "3D",
        "modality": {"0": "CT", "1": "MRI"},
        "labels": labels,
        "numTraining": len(entries["Tr"]),
        "numValidation": len(entries["Va"]),
        "numTest": 0,
        "training": entries["Tr"],
        "validation": entries["Va"],
        "test": [],
    }
    with atomic_path(root / "dataset.json") as tmp:
        tmp.write_text(json.dumps(dataset, indent=2) + "\n", encoding="utf-8")
    return cases
