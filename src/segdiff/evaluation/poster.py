"""The poster authors' metric protocol, number for number with their ``evaluation/eval.py``.

The poster's numbers come from ``evaluation/eval.py`` of ``MrStrenggeheim/adlm-diffusion``. It
reads 8-bit gray PNGs (``Image.open(...).convert("L")``) of the originals, the generations, the
reference masks and the segmentor's predictions, and computes per image, then averages:

* **PSNR** ``peak_signal_noise_ratio(img1, img2, data_range=255)`` on the uint8 images
  (``img1`` the original, ``img2`` the generation);
* **SSIM** ``structural_similarity(img1, img2, full=True, data_range=img1.max() - img1.min())``:
  scikit-image's defaults (7x7 uniform window, sample covariances) on the uint8 values, with the
  data range of the *original* image; NaN values are left out of the mean;
* **Dice** ``1 - DiceLoss(include_background=True, to_onehot_y=False, softmax=False)(pred, gt)``
  with MONAI's defaults (``smooth_nr = smooth_dr = 1e-5``, ``squared_pred=False``,
  ``batch=False``, ``reduction="mean"``) on ``F.one_hot(..., num_classes)`` masks, one image at a
  time, then the mean over images;
* **FID** torchvision's ImageNet InceptionV3 (:mod:`segdiff.evaluation.features.poster`).

The PNGs were written upstream: the generations by diffusers' ``numpy_to_pil``
(``(image * 255).round().astype("uint8")`` of the ``[0, 1]`` output), the originals by
``torchvision.utils.save_image(img, ..., normalize=True)`` (per-image min-max stretch, then
``x * 255 + 0.5`` clamped and truncated to uint8). :func:`to_uint8_generated` and
:func:`to_uint8_original` reproduce the two conversions; the metric functions below accept either
uint8 images (used as they are) or ``[0, 1]`` float images (converted by those rules). eval.py
also resized images whose size differed from ``--img_size`` (256, the size they had): images are
used here at their own size.

Differences from the strict metrics of :mod:`segdiff.evaluation.metrics`:
    * **Dice**: strict Dice is pooled over all slices per organ, without background, averaged over the
      organs present in the reference masks; a slice missing an organ does not count for it. The
      poster's Dice is per image, *with* background, averaged over *all* ``num_classes`` labels, and
      a label absent from both masks scores ``(0 + 1e-5) / (0 + 1e-5) = 1``: with many labels and few
      present in a slice (73 labels in the poster's MRI runs) it is dominated by absent classes and
      background and is much higher than the strict value.
    * **PSNR/SSIM**: strict values are computed on float images in ``[0, 1]`` with data range 1,
      SSIM with an 11x11 Gaussian window (sigma 1.5, population covariances, Wang et al. 2004), and
      PSNR capped at 100 dB. The poster's are computed on 8-bit images, data range 255 for PSNR (no
      cap: identical images give ``inf``) and the original's min-max range for SSIM, scikit-image's
      default 7x7 uniform window; the originals are min-max stretched before quantisation while the
      generations are not, which by itself lowers PSNR when a slice does not span ``[0, 1]``.
    * **FID**: strict FID uses pytorch-fid's TF-ported Inception weights
      (:mod:`segdiff.evaluation.features.fid`) on the ``[0, 1]`` slices; the poster used torchvision's ImageNet
      InceptionV3 (``fc`` removed) on 8-bit images resized to 299x299 by PIL with ImageNet
      normalisation. The two FIDs are not comparable with each other.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

__all__ = [
    "POSTER_DICE_LOSS_ARGS",
    "to_uint8_generated",
    "to_uint8_original",
    "poster_dice",
    "poster_psnr",
    "poster_ssim",
]

POSTER_DICE_LOSS_ARGS: dict[str, bool] = {"include_background": True, "to_onehot_y": False, "softmax": False}
"""``monai.losses.DiceLoss`` arguments of eval.py (everything else at MONAI's defaults)."""

_RANGE_TOLERANCE = 1e-3


def _float_slices(images: np.ndarray, name: str) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"{name}: expected (N, H, W) slices, got shape {images.shape}")
    if images.dtype.kind != "f":
        raise ValueError(f"{name}: expected float images in [0, 1] (or uint8 ones), got dtype {images.dtype}")
    if images.size and (
        not np.isfinite(images).all() or images.min() < -_RANGE_TOLERANCE or images.max() > 1 + _RANGE_TOLERANCE
    ):
        raise ValueError(f"{name}: float images must be in [0, 1], got range [{images.min():.4g}, {images.max():.4g}]")
    return images


def to_uint8_generated(images: np.ndarray) -> np.ndarray:
    """8-bit generations as the poster's pipeline wrote them (diffusers ``numpy_to_pil``).

    ``(clip(x, 0, 1) * 255).round().astype(uint8)``, rounding half to even (numpy).

    Args:
        images: ``(N, H, W)`` float images in ``[0, 1]`` (excursions up to 1e-3 are clipped).

    Returns:
        ``(N, H, W)`` uint8.

    Raises:
        ValueError: If the images are not ``(N, H, W)`` floats in ``[0, 1]``.
    """
    images = _float_slices(images, "generated")
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)


def to_uint8_original(images: np.ndarray) -> np.ndarray:
    """8-bit originals as the poster's pipeline wrote them (``save_image(normalize=True)``).

    Per image, as torchvision does in float32: clamp to ``[min, max]``, subtract ``min``, divide by
    ``max(max - min, 1e-5)``, then ``x * 255 + 0.5`` clamped to ``[0, 255]`` and truncated. A
    constant image becomes all zeros.

    Args:
        images: ``(N, H, W)`` float images in ``[0, 1]``.

    Returns:
        ``(N, H, W)`` uint8, each image stretched to the full 8-bit range.

    Raises:
        ValueError: If the images are not ``(N, H, W)`` floats in ``[0, 1]``.
    """
    x = torch.from_numpy(np.array(_float_slices(images, "original"), dtype=np.float32))
    out = np.empty(x.shape, dtype=np.uint8)
    for i, img in enumerate(x):
        low, high = float(img.min()), float(img.max())
        img = img.clamp(min=low, max=high).sub(low).div(max(high - low, 1e-5))
        out[i] = img.mul(255).add(0.5).clamp(0, 255).to(torch.uint8).numpy()
    return out


def _uint8_pair(generated: np.ndarray, original: np.ndarray, stretch_original: bool) -> tuple[np.ndarray, np.ndarray]:
    generated, original = np.asarray(generated), np.asarray(original)
    if generated.shape != original.shape:
        raise ValueError(f"generated {generated.shape} and original {original.shape} differ in shape")
    if generated.ndim != 3:
        raise ValueError(f"expected (N, H, W) slices, got shape {generated.shape}")
    gen8 = generated if generated.dtype == np.uint8 else to_uint8_generated(generated)
    if original.dtype == np.uint8:
        orig8 = original
    else:
        orig8 = to_uint8_original(original) if stretch_original else to_uint8_generated(original)
    return gen8, orig8


def poster_psnr(generated: np.ndarray, original: np.ndarray, *, stretch_original: bool = True) -> np.ndarray:
    """Per-image PSNR of eval.py: ``peak_signal_noise_ratio(original, generated, data_range=255)``.

    Args:
        generated: ``(N, H, W)`` generations, uint8 (used as is) or float in ``[0, 1]``
            (converted by :func:`to_uint8_generated`).
        original: ``(N, H, W)`` originals, uint8 (used as is) or float in ``[0, 1]`` (converted
            by :func:`to_uint8_original`, see ``stretch_original``).
        stretch_original: Convert float originals with the per-image min-max stretch of the
            poster's ``save_image(normalize=True)`` (default); ``False`` rounds them like the
            generations.

    Returns:
        ``(N,)`` float64 in dB; ``inf`` for identical images (eval.py has no cap).

    Raises:
        ValueError: If the shapes differ or are not ``(N, H, W)``, or float images are not in
            ``[0, 1]``.
    """
    gen8, orig8 = _uint8_pair(generated, original, stretch_original)
    with np.errstate(divide="ignore"):
        return np.array(
            [peak_signal_noise_ratio(o, g, data_range=255) for g, o in zip(gen8, orig8)], dtype=np.float64
        )


def poster_ssim(generated: np.ndarray, original: np.ndarray, *, stretch_original: bool = True) -> np.ndarray:
    """Per-image SSIM of eval.py on 8-bit images.

    ``structural_similarity(original, generated, full=True, data_range=original.max() -
    original.min())``: scikit-image's defaults (7x7 uniform window, sample covariances), the data
    range of that *original* uint8 image. Images must be at least 7 pixels each way.

    Args:
        generated: As in :func:`poster_psnr`.
        original: As in :func:`poster_psnr`.
        stretch_original: As in :func:`poster_psnr`.

    Returns:
        ``(N,)`` float64. A constant original has data range 0, which removes SSIM's stabilising
        constants: the value is ~0, or NaN where a window is flat in both images. eval.py leaves
        NaN values out of its mean: average with ``np.nanmean``.

    Raises:
        ValueError: As :func:`poster_psnr`.
    """
    gen8, orig8 = _uint8_pair(generated, original, stretch_original)
    values = np.empty(len(gen8), dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        for i, (g, o) in enumerate(zip(gen8, orig8)):
            value, _ = structural_similarity(o, g, full=True, data_range=o.max() - o.min())
            values[i] = value
    return values


def _one_hot(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """``(B, H, W)`` labels -> ``(B, num_classes, H, W)`` float one-hot, as eval.py builds it."""
    tensor = torch.from_numpy(labels.astype(np.int64))
    return F.one_hot(tensor, num_classes=num_classes).permute(0, 3, 1, 2).float()


def poster_dice(
    prediction: np.ndarray, target: np.ndarray, num_classes: int, batch_size: int = 16
) -> np.ndarray:
    """Per-image Dice of eval.py: ``1 - DiceLoss(include_background=True, ...)`` on one-hot masks.

    Computed by :class:`monai.losses.DiceLoss` with :data:`POSTER_DICE_LOSS_ARGS` (MONAI's
    defaults otherwise: ``smooth_nr = smooth_dr = 1e-5``) and ``reduction="none"``, ``batch_size``
    images at a time; the per-image loss is the mean over the ``num_classes`` channels, exactly
    what eval.py's ``reduction="mean"`` gives for its one-image batches. Average the result over
    images to get eval.py's number.

    Args:
        prediction: ``(N, H, W)`` integer label maps with values in ``[0, num_classes)``.
        target: ``(N, H, W)`` integer reference label maps with values in ``[0, num_classes)``.
        num_classes: Number of labels, background included (eval.py's ``--num_classes``).
        batch_size: Images per DiceLoss call (memory is ``batch_size * num_classes * H * W``
            floats).

    Returns:
        ``(N,)`` float64 Dice per image; a label absent from both masks of an image counts as
        (almost exactly) 1, one present in the target but not predicted as ~0.

    Raises:
        ValueError: If the shapes differ or are not ``(N, H, W)``, a map is not of an integer
            dtype or has labels outside ``[0, num_classes)``, or ``num_classes`` or
            ``batch_size`` is not positive.
    """
    prediction, target = np.asarray(prediction), np.asarray(target)
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {prediction.shape} and target {target.shape} differ in shape")
    if prediction.ndim != 3:
        raise ValueError(f"expected (N, H, W) label maps, got shape {prediction.shape}")
    for name, arr in (("prediction", prediction), ("target", target)):
        if arr.dtype.kind not in "iu":
            raise ValueError(f"{name} must be an integer label array, got dtype {arr.dtype}")
    if int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes}")
    num_classes = int(num_classes)
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    for name, arr in (("prediction", prediction), ("target", target)):
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(f"{name} labels must be in [0, {num_classes}), got [{arr.min()}, {arr.max()}]")
    loss_fn = DiceLoss(**POSTER_DICE_LOSS_ARGS, reduction="none")
    out = np.empty(len(prediction), dtype=np.float64)
    with torch.no_grad():
        for start in range(0, len(prediction), int(batch_size)):
            stop = start + int(batch_size)
            losses = loss_fn(_one_hot(prediction[start:stop], num_classes), _one_hot(target[start:stop], num_classes))
            per_image = losses.reshape(losses.shape[0], -1).mean(dim=1)
            out[start:stop] = 1 - per_image.double().numpy()
    return out
