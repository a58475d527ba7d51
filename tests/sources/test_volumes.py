"""NIfTI loading: canonical reorientation and every kind of bad input, each named in the error."""

import gzip
import logging

import nibabel as nib
import numpy as np
import pytest
from conftest import ras_pair, save, to_lps

from segdiff.core.errors import InputError
from segdiff.core.labels import load_label_map, load_remap
from segdiff.sources.volumes import load_case

AMOS = load_label_map("amos15")


def test_lps_volume_loads_identical_to_ras_twin(tmp_path):
    image, label, affine = ras_pair()
    lps_image, lps_aff = to_lps(image, affine)
    lps_label, _ = to_lps(label, affine)
    assert nib.aff2axcodes(lps_aff) == ("L", "P", "S")
    ras = load_case(save(image, affine, tmp_path / "a.nii.gz"), save(label, affine, tmp_path / "b.nii.gz"), AMOS)
    lps = load_case(save(lps_image, lps_aff, tmp_path / "c.nii.gz"), save(lps_label, lps_aff, tmp_path / "d.nii.gz"), AMOS)
    np.testing.assert_array_equal(ras.image, lps.image)
    np.testing.assert_array_equal(ras.label, lps.label)
    np.testing.assert_allclose(ras.affine, lps.affine)
    assert ras.spacing == pytest.approx((2.0, 1.5, 3.0))


def test_permuted_axes_are_reoriented(tmp_path):
    image, label, affine = ras_pair()
    perm = (2, 0, 1)
    swap = np.eye(4)[list(perm) + [3]].T  # voxel (i,j,k) of the permuted array -> original voxel
    vol = load_case(save(image.transpose(perm), affine @ swap, tmp_path / "a.nii.gz"),
                    save(label.transpose(perm), affine @ swap, tmp_path / "b.nii.gz"), AMOS)
    np.testing.assert_array_equal(vol.image, image)
    assert vol.spacing == pytest.approx((2.0, 1.5, 3.0))


def test_truncated_gzip_is_named(nifti_pair, tmp_path):
    img_path, lab_path, *_ = nifti_pair
    data = img_path.read_bytes()
    bad = tmp_path / "truncated.nii.gz"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated.nii.gz: .*(truncated|corrupt|readable)"):
        load_case(bad, lab_path, AMOS)


def test_garbage_file_is_named(nifti_pair, tmp_path):
    _, lab_path, *_ = nifti_pair
    bad = tmp_path / "garbage.nii.gz"
    bad.write_bytes(gzip.compress(b"this is not a nifti header" * 20))
    with pytest.raises(InputError, match="garbage.nii.gz: not a readable NIfTI"):
        load_case(bad, lab_path, AMOS)


def test_missing_file_is_named(nifti_pair, tmp_path):
    img_path, *_ = nifti_pair
    with pytest.raises(InputError, match="nope.nii.gz: file not found"):
        load_case(img_path, tmp_path / "nope.nii.gz", AMOS)


def test_grid_shape_mismatch(tmp_path):
    image, label, affine = ras_pair()
    with pytest.raises(InputError, match=r"lab.nii.gz: label grid \(20, 16, 11\) differs"):
        load_case(save(image, affine, tmp_path / "img.nii.gz"), save(label[:, :, :-1], affine, tmp_path / "lab.nii.gz"), AMOS)


def test_grid_affine_mismatch(tmp_path):
    image, label, affine = ras_pair()
    shifted = affine.copy()
    shifted[0, 3] += 1.0
    with pytest.raises(InputError, match="lab.nii.gz: label affine differs"):
        load_case(save(image, affine, tmp_path / "img.nii.gz"), save(label, shifted, tmp_path / "lab.nii.gz"), AMOS)


def test_label_outside_label_map(tmp_path):
    image, label, affine = ras_pair()
    label[0, 0, 0] = 42
    with pytest.raises(InputError, match=r"lab.nii.gz: label values \[42\] are not in the label map"):
        load_case(save(image, affine, tmp_path / "img.nii.gz"), save(label, affine, tmp_path / "lab.nii.gz"), AMOS)


def test_nan_voxels(tmp_path):
    image, label, affine = ras_pair()
    image[1, 2, 3] = np.nan
    image[2, 2, 3] = np.inf
    with pytest.raises(InputError, match="img.nii.gz: 2 voxels are NaN or infinite"):
        load_case(save(image, affine, tmp_path / "img.nii.gz"), save(label, affine, tmp_path / "lab.nii.gz"), AMOS)


def test_4d_volume(tmp_path):
    image, label, affine = ras_pair()
    with pytest.raises(InputError, match=r"img.nii.gz: expected a 3D volume, got shape \(20, 16, 12, 2\)"):
        load_case(save(np.stack([image, image], -1), affine, tmp_path / "img.nii.gz"), save(label, affine, tmp_path / "lab.nii.gz"), AMOS)


def test_4d_with_single_volume_is_accepted(tmp_path):
    image, label, affine = ras_pair()
    vol = load_case(save(image[..., None], affine, tmp_path / "img.nii.gz"), save(label, affine, tmp_path / "lab.nii.gz"), AMOS)
    assert vol.image.shape == image.shape


def test_no_foreground(tmp_path):
    image, label, affine = ras_pair()
    with pytest.raises(InputError, match="lab.nii.gz: no foreground voxel"):
        load_case(save(image, affine, tmp_path / "img.nii.gz"), save(np.zeros_like(label), affine, tmp_path / "lab.nii.gz"), AMOS)


def test_non_integer_labels(tmp_path):
    image, label, affine = ras_pair()
    with pytest.raises(InputError, match="lab.nii.gz: label volume holds non-integer values"):
        load_case(save(image, affine, tmp_path / "img.nii.gz"), save(label + 0.5, affine, tmp_path / "lab.nii.gz", np.float32), AMOS)


def test_remap_sends_unmapped_ids_to_background_and_logs(tmp_path, caplog):
    image, label, affine = ras_pair()
    source = label.copy()
    source[label == 6] = 5  # TotalSegmentator liver
    source[label == 7] = 6  # TotalSegmentator stomach
    source[label == 1] = 90  # a TotalSegmentator id with no AMOS counterpart
    remap = load_remap("totalsegmentator_to_amos", AMOS)
    with caplog.at_level(logging.INFO, logger="segdiff"):
        vol = load_case(save(image, affine, tmp_path / "img.nii.gz"), save(source, affine, tmp_path / "lab.nii.gz"), AMOS, remap)
    assert set(np.unique(vol.label)) == {0, 6, 7}
    np.testing.assert_array_equal(vol.label == 6, label == 6)
    assert f"{np.count_nonzero(label == 1)} voxels with 1 unmapped source ids [90]" in caplog.text


def test_remap_to_nothing_is_no_foreground(tmp_path):
    image, label, affine = ras_pair()
    label[label > 0] = 90
    remap = load_remap("totalsegmentator_to_amos", AMOS)
    with pytest.raises(InputError, match=r"no foreground voxel \(after remap\)"):
        load_case(save(image, affine, tmp_path / "img.nii.gz"), save(label, affine, tmp_path / "lab.nii.gz"), AMOS, remap)
