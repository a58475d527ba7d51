"""Fréchet Radiomics Distance (FRD, Konz, Osuala et al.) through the ``frd-score`` package.

FRD compares two image sets by the Fréchet distance between Gaussians fitted to normalised
radiomic features (PyRadiomics) instead of Inception features. Everything numeric is
``frd-score``'s own code (version FRDv1, its default): :func:`frd_score.frd.get_feature_extractor`
(PyRadiomics configured by its ``extraction_2d.yaml``: Original, LoG sigma 2-5 and Wavelet images;
firstorder, GLCM, GLRLM, GLSZM, NGTDM features; per-image intensity normalisation; 2 px
resampling), :func:`frd_score.frd.process_image_mask_pair` (the whole image as region of interest,
one corner pixel off), :func:`frd_score.frd.z_score_normalize` and
:func:`frd_score.frd.calculate_frechet_distance`.

``frd-score`` works on image files. :func:`radiomics_features` writes the ``[0, 1]`` slices as
8-bit gray PNGs (``round(x * 255)``, the 2-D format frd-score documents) to a temporary folder,
a batch at a time, extracts the features and deletes the files. The features of the real set can
then be reused against several generated sets with :func:`frd_from_features`, which applies
``frd_score.frd.calculate_feature_statistics``'s FRDv1 steps to them:

1. per set, drop images with any NaN feature, cast to float32;
2. z-score both sets with the mean and standard deviation of the **first** set (``norm_ref="d1"``,
   rescaled to ``[0, 1]``, i.e. unchanged): the first set is the normalisation reference, so
   pass the *real* slices first;
3. drop feature columns with NaN/inf in either normalised set (features constant in the
   reference), then fit mean and covariance;
4. Fréchet distance ``d^2``; FRD is ``log(d^2)`` (``-inf`` when ``d^2 <= 0``), frd-score's
   default convention, with ``log=True``.

:func:`frd` on arrays gives the same number as ``frd_score.compute_frd([dir_real, dir_gen])``
on the PNGs written here.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
import radiomics
from frd_score import frd as frd_lib
from PIL import Image

__all__ = [
    "FRD_VERSION",
    "FRD_MIN_SIZE",
    "radiomics_features",
    "frd_from_features",
    "frd",
    "dominant_feature",
]

FRD_VERSION = frd_lib.FRD_VERSION_V1
"""The frd-score version used (FRDv1, the package default and the paper's metric)."""

FRD_MIN_SIZE = 16
"""Smallest slice side accepted (PyRadiomics resamples to 2 px spacing and filters with LoG up to sigma 5)."""

_RANGE_TOLERANCE = 1e-3


def _check_slices(images: np.ndarray, name: str) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"{name}: expected (N, H, W) slices, got shape {images.shape}")
    if images.shape[0] < 1 or min(images.shape[1:]) < FRD_MIN_SIZE:
        side = f"{FRD_MIN_SIZE}x{FRD_MIN_SIZE}"
        raise ValueError(f"{name}: need at least one slice of at least {side} px, got shape {images.shape}")
    if images.dtype.kind != "f":
        raise ValueError(f"{name}: expected float slices in [0, 1], got dtype {images.dtype}")
    if not np.isfinite(images).all() or images.min() < -_RANGE_TOLERANCE or images.max() > 1 + _RANGE_TOLERANCE:
        raise ValueError(f"{name}: slices must be in [0, 1], got range [{images.min():.4g}, {images.max():.4g}]")
    return images


def radiomics_features(
    images: np.ndarray,
    *,
    batch_size: int = 256,
    num_workers: int = 1,
    tmp_dir: str | Path | None = None,
) -> np.ndarray:
    """FRDv1 radiomic features of each slice, extracted by frd-score / PyRadiomics.

    Args:
        images: ``(N, H, W)`` float slices in ``[0, 1]`` (excursions up to 1e-3 are clipped),
            each side at least :data:`FRD_MIN_SIZE`.
        batch_size: Slices written to disk at a time (the temporary folder holds at most this
            many PNGs).
        num_workers: ``1`` extracts in this process; more uses frd-score's ``compute_features``
            process pool.
        tmp_dir: Where the temporary folder is made (default: the system's temporary directory).

    Returns:
        ``(N, F)`` float64 raw (unnormalised) features, in frd-score's order; may contain NaN.

    Raises:
        ValueError: If the slices are not ``(N, H, W)`` floats in ``[0, 1]`` of at least
            :data:`FRD_MIN_SIZE` px a side, or ``batch_size`` or ``num_workers`` is not positive.
        RuntimeError: If frd-score returns different features for different slices.
    """
    images = _check_slices(images, "images")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if int(num_workers) < 1:
        raise ValueError(f"num_workers must be positive, got {num_workers}")
    logging.getLogger("radiomics").setLevel(logging.ERROR)  # as frd-score's compute_frd does
    radiomics.setVerbosity(60)
    with warnings.catch_warnings():  # pykwalify validates the YAML config with importlib's deprecated load_module
        warnings.filterwarnings("ignore", message=".*load_module.*", category=DeprecationWarning)
        extractor = frd_lib.get_feature_extractor(frd_version=FRD_VERSION, image_dim=2)
    rows: list[np.ndarray] = []
    names: list[str] | None = None
    with tempfile.TemporaryDirectory(prefix="segdiff-frd-", dir=tmp_dir) as folder:
        for start in range(0, len(images), int(batch_size)):
            batch = (np.clip(images[start : start + int(batch_size)], 0, 1) * 255).round().astype(np.uint8)
            files = [Path(folder) / f"{start + i:07d}.png" for i in range(len(batch))]
            for path, img in zip(files, batch):
                Image.fromarray(img).save(path)  # uint8 (H, W): mode "L"
            if int(num_workers) == 1:
                results = [
                    frd_lib.process_image_mask_pair(
                        (str(path), None), feature_extractor=extractor, frd_version=FRD_VERSION
                    )
                    for path in files
                ]
                if any(r is None for r in results):  # pragma: no cover - only for masks of <= 1 pixel
                    raise RuntimeError("frd-score skipped a slice (region of interest of at most one pixel)")
                values, dicts = [r[0] for r in results], [r[1] for r in results]
            else:
                array, dicts, _ = frd_lib.compute_features(
                    [str(p) for p in files], extractor, num_workers=int(num_workers), frd_version=FRD_VERSION
                )
                if len(array) != len(files):  # pragma: no cover - only for masks of <= 1 pixel
                    raise RuntimeError("frd-score skipped a slice (region of interest of at most one pixel)")
                values = list(array)
            for d in dicts:
                if names is None:
                    names = list(d)
                elif list(d) != names:
                    raise RuntimeError("frd-score returned different features for different slices")
            rows.append(np.asarray(values, dtype=np.float64))
            for path in files:
                path.unlink()
    return np.concatenate(rows, axis=0)


def _feature_set(features: np.ndarray, name: str) -> np.ndarray:
    features = np.asarray(features)
    if features.ndim != 2 or features.shape[1] < 1:
        raise ValueError(f"{name}: expected (N, F) features, got shape {features.shape}")
    kept = features[~np.isnan(features).any(axis=1)].astype(np.float32)  # frd-score's v1 steps
    if len(kept) < 2:
        raise ValueError(f"{name}: need at least 2 slices without NaN features, have {len(kept)} of {len(features)}")
    return kept


def frd_from_features(real_features: np.ndarray, generated_features: np.ndarray, *, log: bool = True) -> float:
    """FRDv1 between two sets of :func:`radiomics_features`.

    Args:
        real_features: ``(N, F)`` features of the real slices: the normalisation reference
            (frd-score's D1).
        generated_features: ``(M, F)`` features of the generated slices.
        log: Return frd-score's FRD, ``log(d^2)`` (default); ``False`` returns the squared
            Fréchet distance ``d^2`` itself (0 for identical sets).

    Returns:
        The FRD. With ``log=True`` it is ``-inf`` when ``d^2 <= 0`` (identical feature sets).

    Raises:
        ValueError: If a set is not ``(N, F)`` or has fewer than two slices without NaN
            features, the feature counts differ, or no feature varies across the real slices.
    """
    real = _feature_set(real_features, "real_features")
    generated = _feature_set(generated_features, "generated_features")
    if real.shape[1] != generated.shape[1]:
        raise ValueError(f"feature counts differ: {real.shape[1]} (real) vs {generated.shape[1]} (generated)")
    new_min, new_max = frd_lib.V1_DEFAULT_NORM_RANGE
    normalized = []
    with np.errstate(divide="ignore", invalid="ignore"):
        for features in (real, generated):
            normalized.append(
                frd_lib.z_score_normalize(
                    features,
                    new_min=new_min,
                    new_max=new_max,
                    base_distribution=real,
                    replace_nan=False,
                    handle_std_zero=False,
                )
            )
    keep = ~np.zeros(real.shape[1], dtype=bool)
    for nf in normalized:
        keep &= ~(np.isnan(nf).any(axis=0) | np.isinf(nf).any(axis=0))
    if not keep.any():
        raise ValueError("no feature varies across the real slices: FRD is undefined")
    normalized = [nf[:, keep] for nf in normalized]
    mu = [np.mean(nf, axis=0) for nf in normalized]
    sigma = [np.cov(nf, rowvar=False) for nf in normalized]
    distance = float(frd_lib.calculate_frechet_distance(mu[0], sigma[0], mu[1], sigma[1]))
    if not log:
        return distance
    return float(np.log(distance)) if distance > 0 else float("-inf")


def frd(
    real: np.ndarray,
    generated: np.ndarray,
    *,
    log: bool = True,
    batch_size: int = 256,
    num_workers: int = 1,
    tmp_dir: str | Path | None = None,
) -> float:
    """Fréchet Radiomics Distance (FRDv1) between real and generated slices.

    Args:
        real: ``(N, H, W)`` float slices in ``[0, 1]``, the normalisation reference.
        generated: ``(M, H', W')`` float slices in ``[0, 1]``.
        log: See :func:`frd_from_features`.
        batch_size: See :func:`radiomics_features`.
        num_workers: See :func:`radiomics_features`.
        tmp_dir: See :func:`radiomics_features`.

    Returns:
        ``frd_from_features(radiomics_features(real), radiomics_features(generated))``.

    Raises:
        ValueError: As :func:`radiomics_features` and :func:`frd_from_features`.
    """
    options = {"batch_size": batch_size, "num_workers": num_workers, "tmp_dir": tmp_dir}
    return frd_from_features(radiomics_features(real, **options), radiomics_features(generated, **options), log=log)


def dominant_feature(real_features: np.ndarray, generated_features: np.ndarray) -> tuple[int, float, float, float]:
    """The feature that dominates FRDv1's mean term: ``(index, share, reference std, z)``.

    FRDv1 z-scores every feature by the real set; a feature that is (nearly) constant in the real
    slices but not in the generated ones then gets huge z-scores and can decide the FRD alone.
    ``share`` is that feature's part of the squared mean difference of the z-scored sets, ``z``
    its mean difference in reference standard deviations.

    Args:
        real_features: ``(N, F)`` :func:`radiomics_features` of the real slices (the reference).
        generated_features: ``(M, F)`` :func:`radiomics_features` of the generated slices.

    Returns:
        ``(index, share, reference std, z)`` of the dominant feature, after dropping slices with
        NaN features as FRDv1 does; ``(-1, 0.0, nan, 0.0)`` when the mean term is 0.

    Raises:
        ValueError: If a set is not ``(N, F)`` or has fewer than two slices without NaN features.
    """
    real = _feature_set(real_features, "real_features").astype(np.float64)
    generated = _feature_set(generated_features, "generated_features").astype(np.float64)
    mu, sd = real.mean(axis=0), real.std(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        gap = ((generated.mean(axis=0) - mu) / sd) ** 2
    gap[~np.isfinite(gap)] = 0.0
    if gap.sum() <= 0:
        return -1, 0.0, float("nan"), 0.0
    index = int(np.argmax(gap))
    return index, float(gap[index] / gap.sum()), float(sd[index]), float(np.sqrt(gap[index]))
