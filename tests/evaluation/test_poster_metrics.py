"""The poster authors' protocol against eval.py's own calls: MONAI DiceLoss, skimage on 8-bit PNGs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from monai.losses import DiceLoss
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from segdiff.evaluation.poster import (
    POSTER_DICE_LOSS_ARGS,
    poster_dice,
    poster_psnr,
    poster_ssim,
    to_uint8_generated,
    to_uint8_original,
)

# --------------------------------------------------------------------------- Dice


def eval_py_dice(seg_list, seg_pred_list, num_classes):
    """eval.py's calculate_dice, one value per image instead of their mean."""
    dice_loss_fn = DiceLoss(include_background=True, to_onehot_y=False, softmax=False)
    scores = []
    for seg, seg_pred in zip(seg_list, seg_pred_list):
        seg_tensor = torch.from_numpy(seg).unsqueeze(0).long()
        seg_pred_tensor = torch.from_numpy(seg_pred).unsqueeze(0).long()
        seg_onehot = F.one_hot(seg_tensor, num_classes=num_classes).permute(0, 3, 1, 2).float()
        pred_onehot = F.one_hot(seg_pred_tensor, num_classes=num_classes).permute(0, 3, 1, 2).float()
        scores.append(1 - dice_loss_fn(pred_onehot, seg_onehot).item())
    return np.array(scores)


def random_masks(n=7, size=20, num_classes=6, seed=0):
    rng = np.random.default_rng(seed)
    target = rng.integers(0, num_classes - 2, (n, size, size))  # the last two labels never occur
    prediction = np.where(rng.random(target.shape) < 0.6, target, rng.integers(0, num_classes, target.shape))
    return prediction.astype(np.uint8), target.astype(np.int32)


def test_poster_dice_is_one_minus_monai_dice_loss_per_image():
    prediction, target = random_masks()
    expected = eval_py_dice(target, prediction, 6)
    for batch_size in (1, 3, 16):
        values = poster_dice(prediction, target, num_classes=6, batch_size=batch_size)
        assert values.shape == (7,) and values.dtype == np.float64
        np.testing.assert_allclose(values, expected, rtol=0, atol=1e-6)
    assert POSTER_DICE_LOSS_ARGS == {"include_background": True, "to_onehot_y": False, "softmax": False}
    assert 0 < values.min() and values.max() < 1


def test_poster_dice_counts_absent_classes_as_one_and_includes_background():
    target = np.zeros((2, 8, 8), np.int64)
    target[:, 2:6, 2:6] = 1  # 16 pixels of class 1, 48 of background
    prediction = np.zeros_like(target)
    prediction[0] = target[0]  # perfect
    # image 1: class 1 missed entirely
    values = poster_dice(prediction, target, num_classes=4)
    assert values[0] == pytest.approx(1.0, abs=1e-6)  # classes 2 and 3 absent from both: 1 each
    smooth = 1e-5
    background = (2 * 48 + smooth) / (64 + 48 + smooth)
    missed = smooth / (16 + smooth)
    assert values[1] == pytest.approx((background + missed + 1 + 1) / 4, abs=1e-6)
    # the strict Dice would be 0 for image 1 (its only organ missed); the poster's is ~0.65
    assert values[1] > 0.6


def test_poster_dice_validates_its_input():
    prediction, target = random_masks(n=2)
    with pytest.raises(ValueError, match="differ in shape"):
        poster_dice(prediction[:1], target, 6)
    with pytest.raises(ValueError, match="integer"):
        poster_dice(prediction.astype(float), target, 6)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        poster_dice(prediction, target, 4)
    with pytest.raises(ValueError, match="num_classes"):
        poster_dice(prediction, target, 0)
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        poster_dice(prediction[0], target[0], 6)


# --------------------------------------------------------------------------- 8-bit conversion


def slices(n=4, size=24, seed=0, low=0.1, high=0.9):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    base = np.stack([0.5 + 0.5 * np.sin(2 * np.pi * (xx * (i + 1) + yy)) for i in range(n)])
    return (low + (high - low) * base).astype(np.float32), rng


def test_uint8_conversions_are_the_poster_pipelines_png_writers(tmp_path):
    images, rng = slices()
    generated = np.clip(images + rng.normal(0, 0.05, images.shape).astype(np.float32), 0, 1)
    # generations: diffusers numpy_to_pil, (x * 255).round().astype("uint8"), saved as an L PNG
    for i, img in enumerate(to_uint8_generated(generated)):
        Image.fromarray((generated[i] * 255).round().astype("uint8")).save(tmp_path / f"gen{i}.png")
        np.testing.assert_array_equal(np.array(Image.open(tmp_path / f"gen{i}.png").convert("L")), img)
    # originals: torchvision.utils.save_image(normalize=True), read back as eval.py does
    for i, img in enumerate(to_uint8_original(images)):
        torchvision.utils.save_image(torch.from_numpy(images[i])[None], tmp_path / f"orig{i}.png", normalize=True)
        on_disk = np.array(Image.open(tmp_path / f"orig{i}.png").convert("L"))
        np.testing.assert_array_equal(on_disk, img)
        assert img.min() == 0 and img.max() == 255  # stretched to the full 8-bit range
    assert (to_uint8_original(np.full((1, 8, 8), 0.3, np.float32)) == 0).all()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        to_uint8_generated(images * 255)
    with pytest.raises(ValueError, match="dtype"):
        to_uint8_original(np.zeros((1, 8, 8), np.int64))


# --------------------------------------------------------------------------- PSNR / SSIM


def test_poster_psnr_and_ssim_equal_skimage_on_the_uint8_images():
    images, rng = slices(seed=1)
    generated = np.clip(images + rng.normal(0, 0.08, images.shape).astype(np.float32), 0, 1)
    gen8, orig8 = to_uint8_generated(generated), to_uint8_original(images)
    psnr_direct = [peak_signal_noise_ratio(o, g, data_range=255) for g, o in zip(gen8, orig8)]
    ssim_direct = [structural_similarity(o, g, full=True, data_range=o.max() - o.min())[0] for g, o in zip(gen8, orig8)]
    for gen, orig in ((generated, images), (gen8, orig8)):  # float input is converted, uint8 used as is
        np.testing.assert_array_equal(poster_psnr(gen, orig), psnr_direct)
        np.testing.assert_array_equal(poster_ssim(gen, orig), ssim_direct)
    # without the stretch the originals are rounded like the generations
    plain = to_uint8_generated(images)
    np.testing.assert_array_equal(
        poster_psnr(generated, images, stretch_original=False),
        [peak_signal_noise_ratio(o, g, data_range=255) for g, o in zip(gen8, plain)],
    )
    # SSIM's data range is the original's, not 255: a low-contrast original gives another value
    low = orig8 // 4
    own_range = int(low[0].max() - low[0].min())
    assert poster_ssim(gen8, low)[0] == structural_similarity(low[0], gen8[0], data_range=own_range)
    assert poster_ssim(gen8, low)[0] != structural_similarity(low[0], gen8[0], data_range=255)


def test_poster_psnr_ssim_identical_and_constant_images():
    images, _ = slices(n=2)
    orig8 = to_uint8_original(images)
    assert np.isinf(poster_psnr(orig8, orig8)).all()  # eval.py has no cap
    np.testing.assert_allclose(poster_ssim(orig8, orig8), 1.0)
    flat = np.full((1, 16, 16), 100, np.uint8)
    assert np.isnan(poster_ssim(flat // 2, flat)).all()  # data range 0 and flat windows: eval.py drops these
    assert abs(poster_ssim(orig8[:1, :16, :16], flat)[0]) < 1e-9  # data range 0, textured generation: ~0
    with pytest.raises(ValueError, match="differ in shape"):
        poster_psnr(orig8, orig8[:1])
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        poster_ssim(orig8[0], orig8[0])
