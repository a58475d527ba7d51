"""Image-quality and segmentation metrics: PSNR, SSIM, Dice, Fréchet (FID) statistics, diversity.

The numerics come from the reference libraries: :mod:`skimage.metrics` for PSNR/SSIM and
``pytorch_fid`` for the FID InceptionV3 network and the Fréchet distance formula. This module
only fixes the conventions (per-slice values, how Dice is averaged, how Inception weights are
found) and makes the statistics streamable so memory does not grow with the number of slices.

Conventions
-----------
* Images are ``(N, H, W)`` float arrays in ``[0, 1]``; one metric value per slice.
* PSNR is capped at :data:`PSNR_CAP_DB` (100 dB) so identical slices give a finite number and
  tables never show ``inf``; pass ``cap=None`` to get the raw (possibly infinite) values.
* Dice is pooled: per class, ``2 * sum(|P ∩ T|) / (sum(|P|) + sum(|T|))`` over all slices, then
  averaged over the classes present in the reference masks.
* FID weights are never downloaded implicitly; see :func:`find_inception_weights` and
  :func:`fetch_inception_weights` (also ``python -m segdiff.metrics fetch-inception-weights``).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import threading
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytorch_fid.inception as fid_inception
import torch
from pytorch_fid.fid_score import calculate_frechet_distance
from pytorch_fid.inception import FID_WEIGHTS_URL, InceptionV3
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from segdiff.atomic import atomic_path
from segdiff.checkpoints import read_torch_file
from segdiff.errors import InputError, SegdiffError

__all__ = [
    "PSNR_CAP_DB",
    "psnr",
    "ssim",
    "DiceAccumulator",
    "dice_per_slice",
    "GaussianStats",
    "frechet_distance",
    "WeightsUnavailable",
    "FID_WEIGHTS_URL",
    "FID_WEIGHTS_NAME",
    "FID_DIMS",
    "find_inception_weights",
    "load_inception",
    "InceptionFeatures",
    "fetch_inception_weights",
    "diversity",
]

PSNR_CAP_DB = 100.0
"""Upper bound applied to per-slice PSNR (identical slices would otherwise give ``inf``)."""

FID_DIMS = 2048
"""Dimensionality of the InceptionV3 pool3 features used for FID."""

FID_WEIGHTS_NAME = Path(urllib.parse.urlparse(FID_WEIGHTS_URL).path).name
"""File name of pytorch-fid's Inception weights (``pt_inception-2015-12-05-6726825d.pth``)."""

FETCH_COMMAND = "python -m segdiff.metrics fetch-inception-weights"


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

    Parameters
    ----------
    generated, reference : np.ndarray
        ``(N, H, W)`` float images, nominally in ``[0, data_range]``.
    data_range : float
        Peak value ``L`` in ``10 * log10(L**2 / MSE)``.
    cap : float or None
        Values are clipped to at most ``cap`` dB (default :data:`PSNR_CAP_DB`), so a slice
        identical to its reference gives ``cap`` instead of ``inf``. ``None`` keeps ``inf``.

    Returns
    -------
    np.ndarray
        ``(N,)`` float64 PSNR per slice (computed by :func:`skimage.metrics.peak_signal_noise_ratio`).
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

    Parameters
    ----------
    generated, reference : np.ndarray
        ``(N, H, W)`` float images in ``[0, data_range]``.
    data_range : float
        Dynamic range of the images (1.0 for ``[0, 1]``).

    Returns
    -------
    np.ndarray
        ``(N,)`` float64 SSIM per slice (1.0 for identical slices).
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

    Parameters
    ----------
    class_ids : Sequence[int]
        Label values to score (usually the organ labels, without background 0).
    """

    def __init__(self, class_ids: Sequence[int]):
        self.class_ids = _class_ids(class_ids)
        k = len(self.class_ids)
        self._intersection = np.zeros(k, dtype=np.int64)
        self._predicted = np.zeros(k, dtype=np.int64)
        self._target = np.zeros(k, dtype=np.int64)

    def update(self, prediction: np.ndarray, target: np.ndarray) -> None:
        """Add a batch of predicted and reference integer label maps (any shape, the same for both)."""
        prediction, target = _label_pair(prediction, target)
        for i, c in enumerate(self.class_ids):
            p = prediction == c
            t = target == c
            self._intersection[i] += np.count_nonzero(p & t)
            self._predicted[i] += np.count_nonzero(p)
            self._target[i] += np.count_nonzero(t)

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


def dice_per_slice(prediction: np.ndarray, target: np.ndarray, class_ids: Sequence[int]) -> np.ndarray:
    """Dice of each slice, averaged over the classes present in that slice's target.

    Parameters
    ----------
    prediction, target : np.ndarray
        ``(N, ...)`` integer label maps of the same shape.
    class_ids : Sequence[int]
        Label values to score.

    Returns
    -------
    np.ndarray
        ``(N,)`` float64; NaN for a slice whose target contains none of ``class_ids``. Classes
        absent from a slice's target are ignored for that slice, as in :class:`DiceAccumulator`.
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

    Parameters
    ----------
    dim : int
        Feature dimensionality (2048 for FID).
    """

    def __init__(self, dim: int):
        if int(dim) < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        self.dim = int(dim)
        self._n = 0
        self._mean = np.zeros(self.dim, dtype=np.float64)
        self._scatter = np.zeros((self.dim, self.dim), dtype=np.float64)

    def update(self, features: np.ndarray | torch.Tensor) -> None:
        """Add a ``(B, dim)`` batch of feature vectors."""
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
    """
    if a.dim != b.dim:
        raise ValueError(f"feature dimensions differ: {a.dim} vs {b.dim}")
    with warnings.catch_warnings():
        # pytorch-fid 0.3 passes scipy.linalg.sqrtm's deprecated ``disp`` argument
        warnings.filterwarnings("ignore", message=".*`disp` argument.*", category=DeprecationWarning)
        return float(calculate_frechet_distance(a.mean, a.cov, b.mean, b.cov))


# --------------------------------------------------------------------------- Inception weights


class WeightsUnavailable(SegdiffError):
    """The FID Inception weights file is missing or could not be fetched.

    The message says where the file was looked for and how to provide it.
    """


def _hub_weights_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_NAME


def find_inception_weights(path: str | Path | None = None) -> Path:
    """Locate the FID Inception weights file without downloading anything.

    Parameters
    ----------
    path : str, Path or None
        Configured location of the weights. If given it must exist (no fallback). If ``None``,
        the torch hub cache ``<torch.hub.get_dir()>/checkpoints/<FID_WEIGHTS_NAME>`` is used,
        the place where pytorch-fid itself would have cached it.

    Returns
    -------
    Path
        The existing weights file.

    Raises
    ------
    WeightsUnavailable
        If the file is not there; the message names the configured and the hub locations, the
        fetch command and the URL.
    """
    hub = _hub_weights_path()
    candidate = Path(path).expanduser() if path is not None else hub
    if candidate.is_file():
        return candidate
    configured = f"configured path {candidate}" if path is not None else "no path configured"
    dest = f" --dest {candidate}" if path is not None else ""
    raise WeightsUnavailable(
        f"FID Inception weights not found ({configured}; torch hub cache {hub}). "
        f"Fetch them on a machine with internet access with `{FETCH_COMMAND}{dest}` "
        f"(or download {FID_WEIGHTS_URL} by hand) and put the file at the configured path or in the hub cache."
    )


_PATCH_LOCK = threading.Lock()


def _read_state_dict(path: Path) -> Mapping[str, torch.Tensor]:
    state = read_torch_file(path, "Inception weights file")
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(path, f"not an Inception state dict (holds a {type(state).__name__} that is not tensors by name)")
    return state


def load_inception(path: str | Path | None = None, device: str | torch.device = "cpu") -> torch.nn.Module:
    """pytorch-fid's FID InceptionV3 (2048-d pool3 output) with the weights from a local file.

    The network is built by :class:`pytorch_fid.inception.InceptionV3` (``resize_input=True``,
    ``normalize_input=True``: it expects ``[0, 1]`` RGB). pytorch-fid fetches its weights through
    ``load_state_dict_from_url``; while the network is built that hook is replaced (under a lock)
    by one returning the state dict read here with ``weights_only=True``, so nothing is ever
    downloaded and the strict ``load_state_dict`` of pytorch-fid guarantees that every parameter
    comes from the file (never random weights).

    Parameters
    ----------
    path : str, Path or None
        Weights file, see :func:`find_inception_weights`.
    device : str or torch.device
        Where to put the network.

    Returns
    -------
    torch.nn.Module
        The network in eval mode, parameters frozen.

    Raises
    ------
    WeightsUnavailable
        If the weights file is missing.
    InputError
        If the file is corrupt or not the FID Inception weights.
    """
    found = find_inception_weights(path)
    state = _read_state_dict(found)

    def local_weights(url, *args, **kwargs):
        if url != FID_WEIGHTS_URL:  # pragma: no cover - guards against a changed pytorch-fid
            raise RuntimeError(f"pytorch-fid asked for unexpected weights {url}")
        return state

    if not hasattr(fid_inception, "load_state_dict_from_url"):  # pragma: no cover
        raise RuntimeError("this pytorch-fid version has no load_state_dict_from_url hook; update segdiff.metrics")
    with _PATCH_LOCK:
        original = fid_inception.load_state_dict_from_url
        fid_inception.load_state_dict_from_url = local_weights
        try:
            model = InceptionV3(
                [InceptionV3.BLOCK_INDEX_BY_DIM[FID_DIMS]], resize_input=True, normalize_input=True
            )
        except RuntimeError as err:  # missing/unexpected keys, shape mismatches
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise InputError(found, f"not the FID Inception weights ({reason})") from err
        finally:
            fid_inception.load_state_dict_from_url = original
    return model.to(device).eval()


class InceptionFeatures:
    """Callable turning gray slices into 2048-d Inception pool3 features.

    Parameters
    ----------
    weights : str, Path or None
        Weights file (see :func:`find_inception_weights`); ignored when ``model`` is given.
    device : str or torch.device
        Device to run the network on.
    batch_size : int
        Slices per forward pass.
    model : torch.nn.Module, optional
        An already loaded network from :func:`load_inception`.
    """

    dims = FID_DIMS

    def __init__(
        self,
        weights: str | Path | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 32,
        model: torch.nn.Module | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.model = (model if model is not None else load_inception(weights, self.device)).to(self.device).eval()

    @torch.no_grad()
    def __call__(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        """Features of ``(B, H, W)`` or ``(B, 1, H, W)`` slices in ``[0, 1]``.

        Gray values are repeated to three channels. Values outside ``[0, 1]`` by more than
        1e-3 are refused (a sign of a wrong intensity scale); smaller excursions are clipped.

        Returns
        -------
        np.ndarray
            ``(B, 2048)`` float64.
        """
        x = torch.as_tensor(images).detach().to(dtype=torch.float32)
        if x.ndim == 4 and x.shape[1] == 1:
            x = x[:, 0]
        if x.ndim != 3:
            raise ValueError(f"expected (B, H, W) or (B, 1, H, W) slices, got shape {tuple(x.shape)}")
        if x.numel() and (not torch.isfinite(x).all() or x.min() < -1e-3 or x.max() > 1 + 1e-3):
            raise ValueError(
                f"slices must be in [0, 1] for Inception, got range [{x.min().item():.4g}, {x.max().item():.4g}]"
            )
        x = x.clamp(0, 1)
        out = np.empty((x.shape[0], self.dims), dtype=np.float64)
        for start in range(0, x.shape[0], self.batch_size):
            batch = x[start : start + self.batch_size].to(self.device)
            rgb = batch[:, None].expand(-1, 3, -1, -1)
            feats = self.model(rgb)[0]
            out[start : start + len(batch)] = feats.reshape(len(batch), -1).double().cpu().numpy()
        return out


def fetch_inception_weights(
    dest: str | Path | None = None, url: str = FID_WEIGHTS_URL, timeout: float = 60
) -> Path:
    """Download the FID Inception weights (the only function here that touches the network).

    The file is streamed to a temporary sibling of ``dest`` and renamed onto it only when
    complete. If the URL's file name carries a SHA-256 prefix in torch hub's convention
    (``name-<hex>.ext``, as the default URL does), the download is verified against it.

    Parameters
    ----------
    dest : str, Path or None
        Target file; an existing directory receives ``FID_WEIGHTS_NAME``. Default: the torch
        hub cache ``<torch.hub.get_dir()>/checkpoints/<FID_WEIGHTS_NAME>``.
    url : str
        Source URL (default pytorch-fid's release asset).
    timeout : float
        Socket timeout in seconds.

    Returns
    -------
    Path
        Where the weights now are.

    Raises
    ------
    WeightsUnavailable
        On any download failure (HTTP error, unreachable host, truncation, hash mismatch);
        nothing is left at ``dest``.
    """
    dest = _hub_weights_path() if dest is None else Path(dest).expanduser()
    if dest.is_dir():
        dest = dest / FID_WEIGHTS_NAME
    url_name = Path(urllib.parse.urlparse(url).path).name
    match = torch.hub.HASH_REGEX.search(url_name)
    hash_prefix = match.group(1) if match and match.group(1) else None

    def fail(problem: str) -> WeightsUnavailable:
        return WeightsUnavailable(f"could not download {url} to {dest}: {problem}")

    try:
        with atomic_path(dest) as tmp:
            digest = hashlib.sha256()
            received = 0
            request = urllib.request.Request(url, headers={"User-Agent": "segdiff"})
            with urllib.request.urlopen(request, timeout=timeout) as response, open(tmp, "wb") as out:
                expected = response.headers.get("Content-Length")
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
            if expected is not None and expected.isdigit() and received != int(expected):
                raise fail(f"truncated ({received} of {expected} bytes)")
            if hash_prefix is not None and not digest.hexdigest().startswith(hash_prefix):
                raise fail(f"SHA-256 {digest.hexdigest()} does not start with {hash_prefix}")
            os.chmod(tmp, 0o644)  # public weights; mkstemp's 0600 would hide them in a shared cache
    except urllib.error.HTTPError as err:
        raise fail(f"HTTP {err.code} {err.reason}") from err
    except urllib.error.URLError as err:
        raise fail(f"{err.reason}") from err
    except (TimeoutError, OSError) as err:
        raise fail(str(err) or type(err).__name__) from err
    return dest


# --------------------------------------------------------------------------- diversity


def diversity(generated: np.ndarray, mask: np.ndarray, ddof: int = 0) -> dict[str, float]:
    """Pixel-wise spread of several generations for the same mask.

    Parameters
    ----------
    generated : np.ndarray
        ``(N, k, H, W)``: ``k >= 2`` generations for each of ``N`` masks.
    mask : np.ndarray
        ``(N, H, W)`` label maps; pixels with ``mask > 0`` are inside organs.
    ddof : int
        Delta degrees of freedom of the standard deviation (0: population std, numpy's default).

    Returns
    -------
    dict
        ``{"inside": ..., "outside": ...}``: mean over pixels (pooled over all slices) of the
        per-pixel standard deviation across the ``k`` generations, for pixels inside and outside
        the organs; NaN for a region with no pixels.
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
        inside = mask[start : start + chunk] > 0
        sums["inside"] += float(std[inside].sum())
        sums["outside"] += float(std[~inside].sum())
        counts["inside"] += int(inside.sum())
        counts["outside"] += int((~inside).sum())
    return {key: sums[key] / counts[key] if counts[key] else float("nan") for key in sums}


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m segdiff.metrics fetch-inception-weights [--dest PATH] [--url URL]``."""
    parser = argparse.ArgumentParser(prog="python -m segdiff.metrics", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch-inception-weights", help="download the FID Inception weights")
    fetch.add_argument("--dest", type=Path, default=None, help=f"target file (default: {_hub_weights_path()})")
    fetch.add_argument("--url", default=FID_WEIGHTS_URL)
    fetch.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    try:
        path = fetch_inception_weights(args.dest, args.url, args.timeout)
    except WeightsUnavailable as err:
        parser.exit(1, f"error: {err}\n")
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
