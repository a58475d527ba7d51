"""Intensity normalisation, view orientation, aspect-preserving resize, slice selection, memory."""

import tracemalloc

import numpy as np
import pytest
from conftest import ras_pair
from PIL import Image
import torch
import torch.nn.functional as F

from segdiff.data.body import BodySettings
from segdiff.data.shards import write_case_shards
from segdiff.data.slicing import fitted_shape, normalise_ct, normalise_mri, resize_stack, slice_volume, view_stack
from segdiff.sources.volumes import Volume


def test_ct_window_maps_to_unit_interval():
    hu = np.array([-1000, -175, 37.5, 250, 3000], np.float32)
    np.testing.assert_allclose(normalise_ct(hu), [0, 0, 0.5, 1, 1], atol=1e-6)
    np.testing.assert_allclose(normalise_ct(hu, (-1000, 1000)), [0, 0.4125, 0.51875, 0.625, 1], atol=1e-6)


def test_mri_percentile_clipping():
    values = np.arange(1000, dtype=np.float32)
    out = normalise_mri(values, (1.0, 99.0))
    lo, hi = np.percentile(values, (1.0, 99.0))
    assert out.min() == 0 and out.max() == 1
    assert out[500] == pytest.approx((500 - lo) / (hi - lo), abs=1e-6)
    assert np.count_nonzero(out == 1.0) == np.count_nonzero(values >= hi)
    assert not normalise_mri(np.full(10, 3.0, np.float32)).any()  # constant volume: no division by zero


def test_view_orientation_is_radiological():
    vol = np.zeros((5, 6, 7), np.uint8)  # X (R), Y (A), Z (S)
    vol[4, 5, 6] = 1  # most right, most anterior, most superior voxel
    axial, _ = view_stack(vol, (1, 1, 1), "axial")
    coronal, _ = view_stack(vol, (1, 1, 1), "coronal")
    sagittal, _ = view_stack(vol, (1, 1, 1), "sagittal")
    assert axial.shape == (7, 6, 5) and coronal.shape == (6, 7, 5) and sagittal.shape == (5, 7, 6)
    # axial: anterior at the top, patient right at the image left
    assert axial[6, 0, 0] == 1
    # coronal: superior at the top, patient right at the image left
    assert coronal[5, 0, 0] == 1
    # sagittal: superior at the top, anterior at the image left
    assert sagittal[4, 0, 0] == 1


def test_resize_keeps_physical_aspect_and_pads():
    # 40 x 20 pixels of 1 x 4 mm: 40 mm tall, 80 mm wide -> 16 x 32 in a 32 x 32 frame
    stack = np.ones((3, 40, 20), np.float32)
    out, pixel = resize_stack(stack, (1.0, 4.0), 32, labels=False)
    assert out.shape == (3, 32, 32) and pixel == pytest.approx(2.5)
    rows = np.flatnonzero(out[0].any(axis=1))
    assert rows.min() == 8 and rows.max() == 23  # 16 rows of content, centred
    assert out[0, 8:24].min() == pytest.approx(1.0)
    assert not out[0, :8].any() and not out[0, 24:].any()


@pytest.mark.parametrize("shape,size", [((10, 10), 20), ((96, 80), 32), ((37, 53), 24), ((30, 122), 64)])
def test_resize_matches_pil(shape, size):
    """Stack resizing agrees with PIL's antialiased BILINEAR for images and torch's nearest-exact for masks."""
    rng = np.random.default_rng(0)
    image = rng.random((3, *shape), dtype=np.float32)
    mask = rng.integers(0, 16, (3, *shape), dtype=np.uint8)
    out, _ = resize_stack(image, (1.0, 1.0), size, labels=False)
    out_mask, _ = resize_stack(mask, (1.0, 1.0), size, labels=True)
    (h, w), _ = fitted_shape(shape, (1.0, 1.0), size)
    top, left = (size - h) // 2, (size - w) // 2
    for i in range(3):
        ref = np.asarray(Image.fromarray(image[i]).resize((w, h), Image.Resampling.BILINEAR))
        np.testing.assert_allclose(out[i, top : top + h, left : left + w], ref, atol=1e-5)
    ref_mask = F.interpolate(torch.from_numpy(mask)[:, None].float(), size=(h, w), mode="nearest-exact")[:, 0]
    np.testing.assert_array_equal(out_mask[:, top : top + h, left : left + w], ref_mask.numpy().astype(np.uint8))


def test_resize_labels_keep_label_values():
    stack = np.zeros((1, 8, 8), np.uint8)
    stack[0, :, 4:] = 7
    out, _ = resize_stack(stack, (1.0, 1.0), 16, labels=True)
    assert set(np.unique(out)) == {0, 7}
    assert (out[0, :, 8:] == 7).all() and (out[0, :, :8] == 0).all()


def test_slice_selection_by_foreground_and_contract():
    image, label, affine = ras_pair()
    vol = Volume(image=image, label=label, spacing=(2.0, 1.5, 3.0), affine=affine)
    shard = slice_volume(vol, "ct", "axial", 24, min_foreground=1)
    z_with_fg = np.flatnonzero(label.any(axis=(0, 1)))
    np.testing.assert_array_equal(shard.slice, z_with_fg)
    assert shard.image.dtype == np.float32 and shard.mask.dtype == np.uint8
    assert shard.image.shape == shard.mask.shape == (len(z_with_fg), 24, 24)
    assert 0.0 <= shard.image.min() and shard.image.max() <= 1.0
    strict = slice_volume(vol, "ct", "axial", 24, min_foreground=10**6)
    assert strict.image.shape == (0, 24, 24)


def test_unknown_modality_is_rejected():
    with pytest.raises(ValueError, match="unknown modality 'pet'"):
        slice_volume(Volume(*ras_pair()[:2], (1, 1, 1), np.eye(4)), "pet", "axial", 16)


@pytest.mark.parametrize("body", ["off", "threshold"])
def test_native_resolution_ct_slices_within_3x_the_volume(tmp_path, body):
    """Slicing a 512 x 512 x 40 CT (0.7 x 0.7 x 5 mm) into three 256 x 256 views peaks at <= 3x the volume's
    float32 size, the volume itself (image and label) included. Coronal and sagittal slices of such a thin
    volume alone hold 3.2x its voxels, so the shards must be streamed, not built in memory. The peak is that
    of numpy buffers (tracemalloc). With the body envelope derived (``preprocess.body``), too: its
    connected components are one int32 volume more, and nothing else is full-size."""
    shape = (512, 512, 40)
    image = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    image *= 300.0
    label = np.zeros(shape, np.uint8)
    label[16:-16, 16:-16, :] = 6  # foreground in (nearly) every slice of every view: the largest shards
    vol = Volume(image=image, label=label, spacing=(0.7, 0.7, 5.0), affine=np.diag([0.7, 0.7, 5.0, 1.0]))
    held = image.nbytes + label.nbytes
    del image, label
    views = ("axial", "coronal", "sagittal")
    tracemalloc.start()
    try:
        counts = write_case_shards(
            vol, "ct", {v: tmp_path / v / "case.npz" for v in views}, {v: tmp_path / v / "previews" / "case" for v in views},
            image_size=256, min_foreground=1, ct_window=(-175, 250), mri_percentiles=(0.5, 99.5), previews_per_case=2,
            body=BodySettings(mode=body), body_id=16,
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert counts == {"axial": 40, "coronal": 480, "sagittal": 480}
    ratio = (held + peak) / vol.image.nbytes
    assert ratio <= 3.0, f"peak {ratio:.2f}x the volume"
