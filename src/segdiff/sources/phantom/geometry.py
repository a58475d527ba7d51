"""Geometry of the phantom: the voxel grid, smooth random fields and the shape primitives.

Shapes (ellipsoids, tubes along smoothed polylines) are evaluated in physical millimetres on the
world coordinates of the voxel centres, so the anatomy does not depend on the grid: a coarser or
anisotropic grid samples the same patient. Each shape is evaluated only inside its bounding box.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__: list[str] = []  # package-internal: anatomy.py and render.py import the underscored names

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
