"""Rendering one case: tissue and label painting, contrast, texture, blur, noise, bias field, voxel order.

Conventions:

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

from collections.abc import Sequence

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform
from scipy.ndimage import gaussian_filter

from segdiff.sources.phantom.anatomy import _Anatomy, _Paint, _sample_anatomy
from segdiff.sources.phantom.cohort import case_number
from segdiff.sources.phantom.geometry import _Grid, _random_waves
from segdiff.sources.phantom.tissues import _MRI_EXCLUDED, _T, TISSUES, _label_ids

__all__ = ["DEFAULT_SHAPE", "DEFAULT_SPACING", "CT_AXCODES", "MRI_AXCODES", "generate_case", "mri_bias_field"]

DEFAULT_SHAPE: tuple[int, int, int] = (96, 80, 48)
"""Default canonical (RAS) grid shape."""
DEFAULT_SPACING: tuple[float, float, float] = (4.0, 4.0, 6.0)
"""Default canonical (RAS) voxel size in mm."""
CT_AXCODES: tuple[str, str, str] = ("L", "P", "S")
"""Stored voxel axis directions of CT volumes (DICOM-like LPS order)."""
MRI_AXCODES: tuple[str, str, str] = ("L", "I", "A")
"""Stored voxel axis directions of MRI volumes (coronal acquisition: voxel axes x, z, y)."""

_MODALITIES = ("ct", "mri")
_RAS = ("R", "A", "S")


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

    Args:
        x: broadcastable world x coordinates (mm) relative to the patient centre.
        y: broadcastable world y coordinates (mm) relative to the patient centre.
        z: broadcastable world z coordinates (mm) relative to the patient centre.
        rng: random generator.
        amplitude: maximal relative deviation from 1.

    Returns:
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

    Args:
        case: AMOS case id ``amos_NNNN``. By convention ids below 500 are CT and the others MRI,
            but ``modality`` decides the contrast.
        modality: ``'ct'`` or ``'mri'``.
        shape: canonical (RAS) grid shape; MRI is stored with permuted axes (see module notes).
        spacing: canonical (RAS) voxel size in mm. Anatomy is defined in mm, so any grid samples
            the same patient; a field of view smaller than the body simply cuts it.
        seed: cohort seed. The case depends only on ``(seed, NNNN)`` (and modality, shape,
            spacing), through ``np.random.default_rng([seed, NNNN])``.
        render: 0 for the case itself. ``r >= 1`` gives the r-th *oracle render*: a second scan
            of the same patient. The anatomy, the field of view and therefore the label volume are
            identical bit for bit; everything that is not anatomy is drawn afresh from
            ``np.random.default_rng([seed, NNNN, r])``: tissue intensities (contrast phase and
            per-tissue jitter), texture, blur, noise, MRI gain and bias field. Renders sample the
            true conditional distribution p(image | anatomy) that a generator should match.

    Returns:
        ``(image, label)`` NIfTI images with the same shape and affine, qform/sform code 1
        (scanner). CT image int16 HU in LPS voxel order; MRI image float32 (>= 0, Rician noise,
        bias field) in coronal ``('L','I','A')`` order. Label uint8 AMOS ids (1-13 only for MRI).

    Raises:
        ValueError: For a malformed case id, an unknown modality, an invalid shape or spacing, or
            a negative or non-integer ``render``.
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
