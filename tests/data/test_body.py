"""The body envelope (``preprocess.body``): derived from the image (CT in HU, MRI on the normalised scale) or
read from the user's mask, written into the masks as ``LabelMap.body_id`` outside the organs only; slices are
still selected by their organ pixels; the oracle renders carry the case's own envelope."""

import nibabel as nib
import numpy as np
import pytest
from conftest import PHANTOM_SHAPE, PHANTOM_SPACING, ras_pair, save

from segdiff.core.errors import InputError
from segdiff.core.labels import LabelMap, load_label_map
from segdiff.data.body import BodySettings, add_body, body_mask, normalise_with_body
from segdiff.data.jobs import SliceCaseJob, slice_case
from segdiff.data.oracle import render_oracle
from segdiff.data.shards import read_shard, write_case_shards
from segdiff.data.slicing import VIEWS, select_slices
from segdiff.sources.phantom import generate_case
from segdiff.sources.volumes import Volume, load_case

AMOS15 = load_label_map("amos15")
THRESHOLD = BodySettings(mode="threshold")
SHAPE, SPACING = PHANTOM_SHAPE, PHANTOM_SPACING


def _synthetic(air: float, tissue: float, hole: float) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """A (40, 36, 12) volume: an elliptic body with a dark hole inside (a lung) in every axial slice, a bright
    blob in the air apart from it, one organ inside and one organ voxel run of air-dark gas at the body's edge."""
    x, y, z = np.meshgrid(np.arange(40), np.arange(36), np.arange(12), indexing="ij")
    body = ((x - 18) / 14.0) ** 2 + ((y - 18) / 12.0) ** 2 <= 1.0
    lung = ((x - 13) / 4.0) ** 2 + ((y - 18) / 4.0) ** 2 <= 1.0
    blob = (x >= 36) & (y <= 3) & (z >= 4) & (z <= 6)  # outside the body, not touching it
    image = np.full(body.shape, air, np.float32)
    image[body] = tissue
    image[lung] = hole
    image[blob] = tissue
    label = np.zeros(body.shape, np.uint8)
    label[(((x - 22) / 4.0) ** 2 + ((y - 18) / 4.0) ** 2 <= 1.0)] = 6  # liver, inside
    gas = (x >= 30) & (x <= 33) & (y >= 16) & (y <= 19)  # bowel gas through the outline, dark as air
    image[gas] = air
    label[gas] = 13
    return image, label, {"body": body, "lung": lung, "blob": blob, "gas": gas}


@pytest.mark.parametrize("modality,air,tissue,hole", [("ct", -1000.0, -100.0, -850.0), ("mri", 0.01, 0.8, 0.03)])
def test_body_mask_keeps_the_largest_component_fills_holes_and_includes_organs(modality, air, tissue, hole):
    image, label, parts = _synthetic(air, tissue, hole)
    mask = body_mask(image, modality, THRESHOLD, label)
    assert mask.dtype == bool and mask.shape == image.shape
    assert mask[parts["lung"]].all()  # the dark hole inside the outline is filled, slice by slice
    assert not mask[parts["blob"]].any()  # a bright blob apart from the body is not body
    assert mask[label > 0].all()  # organ voxels always are, even where the image is dark as air
    np.testing.assert_array_equal(mask, parts["body"] | parts["gas"])
    # without the organs, the gas run is air (and the threshold is the modality's own)
    np.testing.assert_array_equal(body_mask(image, modality, THRESHOLD) | parts["gas"], mask)


def test_body_mask_thresholds_are_per_modality():
    image = np.full((8, 8, 3), -600.0, np.float32)
    assert not body_mask(image, "ct", BodySettings(mode="threshold", ct_threshold_hu=-500)).any()
    assert body_mask(image, "ct", BodySettings(mode="threshold", ct_threshold_hu=-700)).all()
    mri = np.full((8, 8, 3), 0.12, np.float32)
    assert body_mask(mri, "mri", BodySettings(mode="threshold", mri_threshold=0.1)).all()
    assert not body_mask(mri, "mri", BodySettings(mode="threshold", mri_threshold=0.15)).any()
    with pytest.raises(ValueError, match="unknown modality 'pet'"):
        body_mask(mri, "pet")
    with pytest.raises(ValueError, match="unknown body mode"):
        BodySettings(mode="on")


def test_add_body_marks_background_only():
    label = np.array([[[0, 6, 0], [13, 0, 0]]], np.uint8)
    body = np.array([[[True, True, False], [True, True, False]]])
    add_body(label, body, AMOS15.body_id)
    np.testing.assert_array_equal(label, [[[16, 6, 0], [13, 16, 0]]])
    assert AMOS15.body_id == 16 == AMOS15.max_id + 1
    assert LabelMap({2: "a", 40: "b"}).body_id == 41
    with pytest.raises(ValueError, match="does not fit"):
        add_body(label, body, 256)


def test_envelope_is_off_by_default_and_from_params_drops_the_modality():
    assert not BodySettings().on
    settings = BodySettings.from_params({"mode": "threshold", "modality": "mri", "mri_threshold": 0.2,
                                         "mri_percentiles": [1, 99]})
    assert settings == BodySettings(mode="threshold", mri_threshold=0.2, mri_percentiles=(1, 99))
    assert BodySettings.from_params(None) == BodySettings()


def _shards(folder, out, modality="ct", body=BodySettings(), min_foreground=4):
    volume = load_case(folder / "image.nii.gz", folder / "label.nii.gz", AMOS15)
    shards = {v: out / v / "case.npz" for v in VIEWS}
    write_case_shards(volume, modality, shards, {v: out / v / "previews" for v in VIEWS}, image_size=24,
                      min_foreground=min_foreground, ct_window=(-175, 250), mri_percentiles=(0.5, 99.5),
                      previews_per_case=1, body=body, body_id=AMOS15.body_id)
    return {v: read_shard(p) for v, p in shards.items()}


def test_phantom_shards_carry_the_body_outside_organs_and_select_by_organ_pixels(phantom_ct_case, tmp_path):
    off = _shards(phantom_ct_case, tmp_path / "off", min_foreground=40)
    on = _shards(phantom_ct_case, tmp_path / "on", body=THRESHOLD, min_foreground=40)
    for view in VIEWS:
        np.testing.assert_array_equal(on[view].slice, off[view].slice)  # min_foreground counts organs only
        np.testing.assert_array_equal(on[view].image, off[view].image)
        body = on[view].mask == AMOS15.body_id
        assert body.any()
        assert not off[view].mask[body].any()  # the envelope only where no organ is
        np.testing.assert_array_equal(np.where(body, 0, on[view].mask), off[view].mask)  # organ ids unchanged
    # the body around the organs: with it, a slice holds far more than min_foreground foreground pixels
    axial = on["axial"].mask
    assert np.count_nonzero(axial == AMOS15.body_id) > np.count_nonzero((axial > 0) & (axial < AMOS15.body_id))


def test_min_foreground_ignores_the_body():
    image, label, affine = ras_pair()
    volume = Volume(image=image, label=label.copy(), spacing=(2.0, 1.5, 3.0), affine=affine)
    volume.label[:, :, 0][volume.label[:, :, 0] == 0] = AMOS15.body_id  # slice 0: no organ, all body
    assert not (label[:, :, 0] > 0).any()
    kept = select_slices(volume, image, "axial", 24, min_foreground=1, body_id=AMOS15.body_id).slice
    np.testing.assert_array_equal(kept, np.flatnonzero(label.any(axis=(0, 1))))
    assert 0 in select_slices(volume, image, "axial", 24, min_foreground=1).slice  # counted without body_id


def test_mri_threshold_applies_after_normalisation(tmp_path):
    image, label = generate_case("amos_0501", "mri", SHAPE, SPACING, seed=3)
    nib.save(image, tmp_path / "image.nii.gz")
    nib.save(label, tmp_path / "label.nii.gz")
    volume = load_case(tmp_path / "image.nii.gz", tmp_path / "label.nii.gz", AMOS15)
    organs = volume.label.copy()
    normalised = normalise_with_body(volume, "mri", BodySettings(mode="threshold", mri_threshold=0.15), AMOS15.body_id)
    assert normalised is volume.image and 0.0 <= normalised.min() and normalised.max() <= 1.0
    expected = body_mask(normalised, "mri", BodySettings(mode="threshold", mri_threshold=0.15), organs)
    np.testing.assert_array_equal(volume.label == AMOS15.body_id, expected & (organs == 0))
    assert 0.3 < np.mean(expected) < 0.7  # the phantom's body is about half its field of view


def _sheet_case(folder, body: np.ndarray | None = None, affine_shift: float = 0.0):
    image, label, affine = ras_pair()
    save(image, affine, folder / "image.nii.gz")
    save(label, affine, folder / "label.nii.gz")
    if body is not None:
        moved = affine.copy()
        moved[0, 3] += affine_shift
        save(body.astype(np.uint8), moved, folder / "body.nii.gz")
    return image, label


def test_sheet_mode_reads_the_users_body_mask(tmp_path):
    body = np.zeros((20, 16, 12), bool)
    body[1:19, 1:15, :] = True
    _, label = _sheet_case(tmp_path, body)
    job = SliceCaseJob(case="c1", modality="ct", image=tmp_path / "image.nii.gz", label=tmp_path / "label.nii.gz",
                       labels=AMOS15, remap=None, shards={"axial": tmp_path / "axial.npz"},
                       previews={"axial": tmp_path / "previews"}, image_size=16, min_foreground=1,
                       ct_window=(-175, 250), mri_percentiles=None, previews_per_case=1, body=BodySettings(mode="sheet"),
                       body_mask=tmp_path / "body.nii.gz")
    slice_case(job)
    shard = read_shard(tmp_path / "axial.npz")
    ids = set(np.unique(shard.mask).tolist())
    assert AMOS15.body_id in ids and ids <= {0, 1, 6, 7, AMOS15.body_id}
    # the user's mask as given (no threshold): body where it says so and no organ is
    volume = load_case(tmp_path / "image.nii.gz", tmp_path / "label.nii.gz", AMOS15, body_path=tmp_path / "body.nii.gz")
    np.testing.assert_array_equal(volume.body, body)


def test_sheet_mode_refuses_a_body_mask_on_another_grid(tmp_path):
    body = np.ones((20, 16, 11), bool)  # one slice short
    _sheet_case(tmp_path, body)
    with pytest.raises(InputError, match=r"body\.nii\.gz: body mask grid \(20, 16, 11\) differs from image grid"):
        load_case(tmp_path / "image.nii.gz", tmp_path / "label.nii.gz", AMOS15, body_path=tmp_path / "body.nii.gz")
    _sheet_case(tmp_path, np.ones((20, 16, 12), bool), affine_shift=5.0)
    with pytest.raises(InputError, match=r"body\.nii\.gz: body mask affine differs"):
        load_case(tmp_path / "image.nii.gz", tmp_path / "label.nii.gz", AMOS15, body_path=tmp_path / "body.nii.gz")
    _sheet_case(tmp_path, np.zeros((20, 16, 12), bool))
    with pytest.raises(InputError, match="no body voxel"):
        load_case(tmp_path / "image.nii.gz", tmp_path / "label.nii.gz", AMOS15, body_path=tmp_path / "body.nii.gz")


@pytest.mark.parametrize("case,modality,contrast", [("amos_0002", "ct", "ct"), ("amos_0002", "ct", "mri"),
                                                    ("amos_0501", "mri", "mri")])
def test_oracle_masks_carry_the_cases_own_envelope(tmp_path, case, modality, contrast):
    image, label = generate_case(case, modality, SHAPE, SPACING, seed=3)
    nib.save(image, tmp_path / "image.nii.gz")
    nib.save(label, tmp_path / "label.nii.gz")
    shards = _shards(tmp_path, tmp_path / "shards", modality=modality, body=THRESHOLD)
    renders = render_oracle(case, contrast, tmp_path / "label.nii.gz", {"shape": list(SHAPE), "spacing": list(SPACING)},
                            3, 2, AMOS15, ["axial", "sagittal"], image_size=24, min_foreground=4, ct_window=(-175, 250),
                            mri_percentiles=(0.5, 99.5), body=THRESHOLD, case_image=tmp_path / "image.nii.gz",
                            case_modality=modality)
    for view in ("axial", "sagittal"):
        np.testing.assert_array_equal(renders[view]["mask"], shards[view].mask)
        np.testing.assert_array_equal(renders[view]["slice"], shards[view].slice)
    with pytest.raises(ValueError, match="case's own image"):
        render_oracle(case, contrast, tmp_path / "label.nii.gz", {"shape": list(SHAPE), "spacing": list(SPACING)},
                      3, 1, AMOS15, ["axial"], image_size=24, min_foreground=4, ct_window=(-175, 250),
                      mri_percentiles=(0.5, 99.5), body=THRESHOLD)
