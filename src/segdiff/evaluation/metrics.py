"""Metric formulas: PSNR, SSIM, Dice, Fréchet distance statistics, diversity.

The numerics come from the reference libraries: :mod:`skimage.metrics` for PSNR/SSIM and
``pytorch_fid`` for the Fréchet distance formula. This module only fixes the conventions
(per-slice values, how Dice is averaged) and makes the statistics streamable so memory does not
grow with the number of slices. Feature extractors live elsewhere: :mod:`segdiff.evaluation.features.fid`
(FID), :mod:`segdiff.evaluation.features.poster` (the poster's FID network), :mod:`segdiff.evaluation.features.radiomics` (radiomics);
the poster authors' protocol is :mod:`segdiff.evaluation.poster`.

Conventions:
    * Images are ``(N, H, W)`` float arrays in ``[0, 1]``; one metric value per slice.
    * PSNR is capped at :data:`PSNR_CAP_DB` (100 dB) so identical slices give a finite number and
      tables never show ``inf``; pass ``cap=None`` to get the raw (possibly infinite) values.
    * Dice is pooled: per class, ``2 * sum(|P ∩ T|) / (sum(|P|) + sum(|T|))`` over all slices,
      then averaged over the classes present in the reference masks.
    * Diversity is the mean per-pixel standard deviation across several generations of one mask;
      :func:`diversity_ratio` relates it to the spread of a reference ("oracle") generator.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from pytorch_fid.fid_score import calculate_frechet_distance
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

__all__ = [
    "PSNR_CAP_DB",
    "psnr",
    "ssim",
    "DiceAccumulator",
    "dice_counts",
    "dice_per_slice",
    "GaussianStats",
    "frechet_distance",
    "diversity",
    "diversity_ratio",
]

PSNR_CAP_DB = 100.0
"""Upper bound applied to per-slice PSNR (identical slices would otherwise give ``inf``)."""


# --------------------------------------------------------------------------- PSNR / SSIM


def _image_pair(generated: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    generated = np.asarray(generated, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if generated.ndim != 3:
        raise ValueError(f"expected (N, H, W) slices, got shape {generated.shape}")
    if generated.shape != reference.shape:
        raise ValueError(f"generated {generated.shape} and reference {reference.shape} differ in shape")
    return generated, reference


def psnr(
    generated: np.ndarray,
    reference: np.ndarray,
    data_range: float = 1.0,
    cap: float | None = PSNR_CAP_DB,
) -> np.ndarray:
    """Per-slice peak signal-to-noise ratio in dB.

    Args:
        generated: ``(N, H, W)`` float images, nominally in ``[0, data_range]``.
        reference: ``(N, H, W)`` float images of the same shape, nominally in ``[0, data_range]``.
        data_range: Peak value ``L`` in ``10 * log10(L**2 / MSE)``.
        cap: Values are clipped to at most ``cap`` dB (default :data:`PSNR_CAP_DB`), so a slice
            identical to its reference gives ``cap`` instead of ``inf``. ``None`` keeps ``inf``.

    Returns:
        ``(N,)`` float64 PSNR per slice (computed by :func:`skimage.metrics.peak_signal_noise_ratio`).

    Raises:
        ValueError: If the images are not ``(N, H, W)`` or differ in shape.
    """
    generated, reference = _image_pair(generated, reference)
    with np.errstate(divide="ignore"):  # MSE == 0 -> inf, handled by the cap
        values = np.array(
            [peak_signal_noise_ratio(r, g, data_range=data_range) for g, r in zip(generated, reference)],
            dtype=np.float64,
        )
    return values if cap is None else np.minimum(values, cap)


def ssim(generated: np.ndarray, reference: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """Per-slice structural similarity with the setting of Wang et al. (2004).

    Gaussian-weighted 11x11 window (``sigma=1.5``), population covariances
    (``use_sample_covariance=False``), computed by :func:`skimage.metrics.structural_similarity`
    in float64. Slices must be at least 11 pixels in each direction.

    Args:
        generated: ``(N, H, W)`` float images in ``[0, data_range]``.
        reference: ``(N, H, W)`` float images of the same shape in ``[0, data_range]``.
        data_range: Dynamic range of the images (1.0 for ``[0, 1]``).

    Returns:
        ``(N,)`` float64 SSIM per slice (1.0 for identical slices).

    Raises:
        ValueError: If the images are not ``(N, H, W)`` or differ in shape.
    """
    generated, reference = _image_pair(generated, reference)
    return np.array(
        [
            structural_similarity(
                r, g, data_range=data_range, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
            )
            for g, r in zip(generated, reference)
        ],
        dtype=np.float64,
    )


# --------------------------------------------------------------------------- Dice


def _label_pair(prediction: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    prediction = np.asarray(prediction)
    target = np.asarray(target)
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {prediction.shape} and target {target.shape} differ in shape")
    for name, arr in (("prediction", prediction), ("target", target)):
        if arr.dtype.kind not in "iu":
            raise ValueError(f"{name} must be an integer label array, got dtype {arr.dtype}")
    return prediction, target


def _class_ids(class_ids: Sequence[int]) -> tuple[int, ...]:
    ids = tuple(int(c) for c in class_ids)
    if not ids:
        raise ValueError("class_ids is empty")
    if len(set(ids)) != len(ids):
        raise ValueError(f"class_ids has duplicates: {list(ids)}")
    return ids


class DiceAccumulator:
    """Pooled Dice over a stream of label maps.

    Per class ``c`` the intersections and sizes are summed over everything passed to
    :meth:`update`; ``Dice_c = 2 * sum|P_c ∩ T_c| / (sum|P_c| + sum|T_c|)``.

    Rules for absent classes:

    * a class present in the target but never predicted scores 0.0;
    * a class absent from every target is left out of :meth:`per_class` and :meth:`mean`
      (even if it was predicted: there is no reference to compare with).

    Args:
        class_ids: Label values to score (usually the organ labels, without background 0).

    Raises:
        ValueError: If ``class_ids`` is empty or has duplicates.
    """

    def __init__(self, class_ids: Sequence[int]):
        self.class_ids = _class_ids(class_ids)
        k = len(self.class_ids)
        self._intersection = np.zeros(k, dtype=np.int64)
        self._predicted = np.zeros(k, dtype=np.int64)
        self._target = np.zeros(k, dtype=np.int64)

    def update(self, prediction: np.ndarray, target: np.ndarray) -> None:
        """Add a batch of predicted and reference integer label maps.

        Args:
            prediction: Predicted integer label map(s), any shape.
            target: Reference integer label map(s), the shape of ``prediction``.

        Raises:
            ValueError: If the shapes differ or a map is not of an integer dtype.
        """
        prediction, target = _label_pair(prediction, target)
        self.add_counts(dice_counts(prediction.reshape(1, -1), target.reshape(1, -1), self.class_ids))

    def add_counts(self, counts: np.ndarray) -> None:
        """Add per-map counts (:func:`dice_counts`), e.g. saved ones: the pooled Dice of any set of maps
        recomputes from its maps' counts alone.

        Args:
            counts: ``(N, C, 3)`` int: intersection, predicted and true pixels of each of ``N`` maps and each
                of the ``C`` classes of :attr:`class_ids`, in that order.

        Raises:
            ValueError: If ``counts`` is not of shape ``(N, C, 3)``.
        """
        counts = np.asarray(counts)
        if counts.ndim != 3 or counts.shape[1:] != (len(self.class_ids), 3):
            raise ValueError(f"expected counts of shape (N, {len(self.class_ids)}, 3), got {counts.shape}")
        intersection, predicted, target = counts.sum(axis=0, dtype=np.int64).T
        self._intersection += intersection
        self._predicted += predicted
        self._target += target

    def per_class(self) -> dict[int, float]:
        """Pooled Dice of every class present in the targets seen so far (never NaN)."""
        return {
            c: float(2.0 * self._intersection[i] / (self._predicted[i] + self._target[i]))
            for i, c in enumerate(self.class_ids)
            if self._target[i] > 0
        }

    def mean(self) -> float:
        """Mean of :meth:`per_class` over the classes present in the targets; NaN if there are none."""
        values = list(self.per_class().values())
        return float(np.mean(values)) if values else float("nan")


def dice_counts(prediction: np.ndarray, target: np.ndarray, class_ids: Sequence[int]) -> np.ndarray:
    """Per map and class: (intersection, predicted pixels, true pixels), what pooled Dice is made of.

    Args:
        prediction: ``(N, ...)`` integer label maps.
        target: ``(N, ...)`` integer reference label maps (ids not in ``class_ids``, e.g. a body envelope,
            count for no class).
        class_ids: Label values to count.

    Returns:
        int64 ``(N, C, 3)``, classes in the order of ``class_ids`` (:meth:`DiceAccumulator.add_counts`).

    Raises:
        ValueError: If the shapes differ, a map is not of an integer dtype, or ``class_ids`` is empty or has
            duplicates.
    """
    prediction, target = _label_pair(prediction, target)
    ids = _class_ids(class_ids)
    n = len(prediction)
    p, t = prediction.reshape(n, -1), target.reshape(n, -1)
    out = np.empty((n, len(ids), 3), np.int64)
    for j, c in enumerate(ids):
        pc, tc = p == c, t == c
        out[:, j, 0] = np.count_nonzero(pc & tc, axis=1)
        out[:, j, 1] = np.count_nonzero(pc, axis=1)
        out[:, j, 2] = np.count_nonzero(tc, axis=1)
    return out


def dice_per_slice(prediction: np.ndarray, target: np.ndarray, class_ids: Sequence[int]) -> np.ndarray:
    """Dice of each slice, averaged over the classes present in that slice's target.

    Args:
        prediction: ``(N, ...)`` integer label maps.
        target: ``(N, ...)`` integer reference label maps, the shape of ``prediction``.
        class_ids: Label values to score.

    Returns:
        ``(N,)`` float64; NaN for a slice whose target contains none of ``class_ids``. Classes
        absent from a slice's target are ignored for that slice, as in :class:`DiceAccumulator`.

    Raises:
        ValueError: If the shapes differ, a map is not of an integer dtype or is a scalar, or
            ``class_ids`` is empty or has duplicates.
    """
    prediction, target = _label_pair(prediction, target)
    ids = _class_ids(class_ids)
    if prediction.ndim < 1:
        raise ValueError("expected (N, ...) label maps, got a scalar")
    n = prediction.shape[0]
    p = prediction.reshape(n, -1)
    t = target.reshape(n, -1)
    total = np.zeros(n, dtype=np.float64)
    present = np.zeros(n, dtype=np.int64)
    for c in ids:
        pc, tc = p == c, t == c
        inter = np.count_nonzero(pc & tc, axis=1)
        sizes = np.count_nonzero(pc, axis=1) + np.count_nonzero(tc, axis=1)
        has = np.count_nonzero(tc, axis=1) > 0
        total[has] += 2.0 * inter[has] / sizes[has]
        present += has
    out = np.full(n, np.nan)
    np.divide(total, present, out=out, where=present > 0)
    return out


# --------------------------------------------------------------------------- Fréchet statistics


class GaussianStats:
    """Running mean and covariance of feature vectors, in float64, memory ``O(dim**2)``.

    Batches are merged with the pairwise update of Chan et al. (mean and centred scatter
    matrix), which avoids the cancellation of the naive sum-of-outer-products formula.

    Args:
        dim: Feature dimensionality (2048 for FID).

    Raises:
        ValueError: If ``dim`` is not positive.
    """

    def __init__(self, dim: int):
        if int(dim) < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        self.dim = int(dim)
        self._n = 0
        self._mean = np.zeros(self.dim, dtype=np.float64)
        self._scatter = np.zeros((self.dim, self.dim), dtype=np.float64)

    def update(self, features: np.ndarray | torch.Tensor) -> None:
        """Add a batch of feature vectors.

        Args:
            features: ``(B, dim)`` feature vectors (an empty batch is a no-op).

        Raises:
            ValueError: If the shape is not ``(B, dim)`` or a value is NaN or inf.
        """
        if isinstance(features, torch.Tensor):
            features = features.detach().cpu().numpy()
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected features of shape (B, {self.dim}), got {x.shape}")
        b = x.shape[0]
        if b == 0:
            return
        if not np.isfinite(x).all():
            raise ValueError("features contain NaN or inf")
        batch_mean = x.mean(axis=0)
        centred = x - batch_mean
        batch_scatter = centred.T @ centred
        n = self._n
        delta = batch_mean - self._mean
        total = n + b
        self._scatter += batch_scatter + np.outer(delta, delta) * (n * b / total)
        self._mean += delta * (b / total)
        self._n = total

    @property
    def n(self) -> int:
        """Number of feature vectors seen."""
        return self._n

    @property
    def mean(self) -> np.ndarray:
        """``(dim,)`` mean of the features (needs at least one vector)."""
        if self._n < 1:
            raise ValueError("no features seen yet")
        return self._mean.copy()

    @property
    def cov(self) -> np.ndarray:
        """``(dim, dim)`` unbiased covariance, as ``np.cov(x, rowvar=False)`` (needs two vectors)."""
        if self._n < 2:
            raise ValueError(f"covariance needs at least 2 feature vectors, have {self._n}")
        cov = self._scatter / (self._n - 1)
        return (cov + cov.T) / 2  # exactly symmetric


def frechet_distance(a: GaussianStats, b: GaussianStats) -> float:
    """Fréchet distance between the Gaussians fitted to two feature sets.

    ``||mu_a - mu_b||^2 + Tr(C_a + C_b - 2 (C_a C_b)^(1/2))``, computed by
    :func:`pytorch_fid.fid_score.calculate_frechet_distance`. With Inception pool3 features
    this is the FID.

    Args:
        a: Statistics of the first feature set (at least two vectors).
        b: Statistics of the second feature set (at least two vectors).

    Returns:
        The Fréchet distance.

    Raises:
        ValueError: If the feature dimensions differ or a set has fewer than two vectors.
    """
    if a.dim != b.dim:
        raise ValueError(f"feature dimensions differ: {a.dim} vs {b.dim}")
    with warnings.catch_warnings():
        # pytorch-fid 0.3 passes scipy.linalg.sqrtm's deprecated ``disp`` argument
        warnings.filterwarnings("ignore", message=".*`disp` argument.*", category=DeprecationWarning)
        return float(calculate_frechet_distance(a.mean, a.cov, b.mean, b.cov))


# --------------------------------------------------------------------------- diversity


def diversity(generated: np.ndarray, mask: np.ndarray, ddof: int = 0,
              organs: Sequence[int] | None = None) -> dict[str, float]:
    """Pixel-wise spread of several generations for the same mask.

    Args:
        generated: ``(N, k, H, W)``: ``k >= 2`` generations for each of ``N`` masks.
        mask: ``(N, H, W)`` label maps; pixels with ``mask > 0`` are inside organs (or, with
            ``organs``, pixels whose id is one of them).
        ddof: Delta degrees of freedom of the standard deviation (0: population std, numpy's
            default).
        organs: the organ ids (the label map's ids); None: every id but 0. Give them when the masks
            may hold a non-organ id (a body envelope): its pixels then count as outside.

    Returns:
        ``{"inside": ..., "outside": ...}``: mean over pixels (pooled over all slices) of the
        per-pixel standard deviation across the ``k`` generations, for pixels inside and outside
        the organs; NaN for a region with no pixels.

    Raises:
        ValueError: If the shapes do not match or there are fewer than two generations per mask
            (or not more than ``ddof``).
    """
    generated = np.asarray(generated)
    mask = np.asarray(mask)
    if generated.ndim != 4:
        raise ValueError(f"expected generations of shape (N, k, H, W), got {generated.shape}")
    n, k, h, w = generated.shape
    if k < 2 or k <= ddof:
        raise ValueError(f"need at least 2 generations per mask (and more than ddof={ddof}), got k={k}")
    if mask.shape != (n, h, w):
        raise ValueError(f"mask shape {mask.shape} does not match generations {generated.shape} (expected {(n, h, w)})")
    sums = {"inside": 0.0, "outside": 0.0}
    counts = {"inside": 0, "outside": 0}
    chunk = max(1, (1 << 24) // max(1, k * h * w))  # bound the float64 temporaries
    for start in range(0, n, chunk):
        std = np.std(generated[start : start + chunk], axis=1, dtype=np.float64, ddof=ddof)
        part = mask[start : start + chunk]
        inside = part > 0 if organs is None else np.isin(part, [int(c) for c in organs])
        sums["inside"] += float(std[inside].sum())
        sums["outside"] += float(std[~inside].sum())
        counts["inside"] += int(inside.sum())
        counts["outside"] += int((~inside).sum())
    return {key: sums[key] / counts[key] if counts[key] else float("nan") for key in sums}


def diversity_ratio(generated: np.ndarray, oracle: np.ndarray, mask: np.ndarray, ddof: int = 0,
                    organs: Sequence[int] | None = None) -> float:
    """Diversity inside the organs relative to that of a reference generator for the same masks.

    ``diversity(generated, mask)["inside"] / diversity(oracle, mask)["inside"]``: 1 means the
    model varies its renders inside the organs as much as the oracle (e.g. the phantom renderer
    with fresh noise), 0 means it always draws the same picture.

    Args:
        generated: ``(N, k, H, W)``: ``k >= 2`` generations for each of ``N`` masks.
        oracle: ``(N, k', H, W)``: ``k' >= 2`` reference renders of the same ``N`` masks (``k'``
            may differ from ``k``; with ``ddof=0`` equal counts compare like with like).
        mask: ``(N, H, W)`` label maps; pixels with ``mask > 0`` are inside organs.
        ddof: Delta degrees of freedom of the standard deviations, see :func:`diversity`.
        organs: the organ ids, see :func:`diversity` (None: every id but 0).

    Returns:
        The ratio; NaN when the oracle's spread inside the organs is 0 or no pixel is inside.

    Raises:
        ValueError: If the shapes do not match (see :func:`diversity`).
    """
    generated = np.asarray(generated)
    oracle = np.asarray(oracle)
    if generated.ndim != 4 or oracle.ndim != 4:
        raise ValueError(
            f"expected generations and oracle renders of shape (N, k, H, W), got {generated.shape} and {oracle.shape}"
        )
    if (generated.shape[0], *generated.shape[2:]) != (oracle.shape[0], *oracle.shape[2:]):
        raise ValueError(
            f"oracle {oracle.shape} does not render the same (N, ., H, W) masks as generated {generated.shape}"
        )
    spread = diversity(oracle, mask, ddof, organs)["inside"]
    own = diversity(generated, mask, ddof, organs)["inside"]
    if not np.isfinite(spread) or spread == 0:
        return float("nan")
    return float(own / spread)
