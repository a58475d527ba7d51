"""Anatomy sampling: one patient's organs, muscles, bones and body layers, drawn from a seeded generator.

Positions are in the phantom's anatomy frame (RAS+ mm, centred on the patient: the spine is
posterior midline at ``x = 0``, the kidneys at ``z ~ 0``). The number of random draws is fixed,
independent of the grid and the modality.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from segdiff.sources.phantom.geometry import _Ellipsoid, _random_waves, _Shape, _Tube, _Waves

__all__: list[str] = []  # package-internal: render.py imports the underscored names


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
