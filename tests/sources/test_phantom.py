"""Tests of the synthetic AMOS-layout phantom (segdiff.sources.phantom)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from scipy.ndimage import binary_erosion

from segdiff.sources import phantom as ph
from segdiff.sources.phantom import render as ph_render

SMALL = (48, 40, 24)
SMALL_SP = (8.0, 8.0, 12.0)
SEED = 1234
AMOS = ph.amos_labels()
ID = {name: i for i, name in AMOS.items()}


def _arr(img: nib.Nifti1Image) -> np.ndarray:
    return np.asarray(img.dataobj)


def _canonical(img: nib.Nifti1Image) -> tuple[np.ndarray, np.ndarray]:
    can = nib.as_closest_canonical(img)
    return np.asarray(can.dataobj), can.affine


def _centroid(label: nib.Nifti1Image, ident: int) -> np.ndarray:
    """World (RAS, mm) centroid of one label, computed in the stored voxel order."""
    ijk = np.argwhere(_arr(label) == ident)
    assert len(ijk), f"label {ident} absent"
    return nib.affines.apply_affine(label.affine, ijk).mean(axis=0)


@pytest.fixture(scope="module")
def ct_small():
    return ph.generate_case("amos_0001", "ct", SMALL, SMALL_SP, SEED)


@pytest.fixture(scope="module")
def mri_small():
    return ph.generate_case("amos_0501", "mri", SMALL, SMALL_SP, SEED)


@pytest.fixture(scope="module")
def ct_default():
    return ph.generate_case("amos_0002", "ct", ph.DEFAULT_SHAPE, ph.DEFAULT_SPACING, SEED)


# --- cohort plan -----------------------------------------------------------------------------


def test_plan_ids_subsets_and_paths():
    plan = ph.phantom_cases(8, 8, 0.2)
    expected = [f"amos_{i:04d}" for i in [*range(1, 9), *range(501, 509)]]
    assert [c["case"] for c in plan] == expected
    for c in plan:
        number = ph.case_number(c["case"])
        assert c["modality"] == ("ct" if number < 500 else "mri")
        assert c["image"] == f"images{c['subset']}/{c['case']}.nii.gz"
        assert c["label"] == f"labels{c['subset']}/{c['case']}.nii.gz"
    for modality in ("ct", "mri"):
        subsets = [c["subset"] for c in plan if c["modality"] == modality]
        assert subsets == ["Tr"] * 6 + ["Va"] * 2  # the last round(0.2 * 8) cases


def test_plan_validation_fraction_edge_cases():
    assert ph.phantom_cases(0, 0) == []
    assert [c["subset"] for c in ph.phantom_cases(1, 0, 0.2)] == ["Tr"]
    plan = ph.phantom_cases(3, 2, 0.9)  # never all of a modality when n > 1
    assert [c["subset"] for c in plan] == ["Tr", "Va", "Va", "Tr", "Va"]
    assert all(c["subset"] == "Tr" for c in ph.phantom_cases(4, 4, 0.0))


@pytest.mark.parametrize(
    "args", [(-1, 2, 0.2), (2, -1, 0.2), (2, 2, 1.5), (2.5, 2, 0.2), (True, 2, 0.2), (500, 0, 0.2)]
)
def test_plan_rejects_bad_arguments(args):
    with pytest.raises(ValueError):
        ph.phantom_cases(*args)


def test_generate_case_rejects_bad_arguments():
    with pytest.raises(ValueError, match="amos_NNNN"):
        ph.generate_case("case1", "ct", SMALL, SMALL_SP, 0)
    with pytest.raises(ValueError, match="modality"):
        ph.generate_case("amos_0001", "pet", SMALL, SMALL_SP, 0)
    with pytest.raises(ValueError, match="shape"):
        ph.generate_case("amos_0001", "ct", (48, 40), SMALL_SP, 0)
    with pytest.raises(ValueError, match="spacing"):
        ph.generate_case("amos_0001", "ct", SMALL, (8.0, 0.0, 12.0), 0)


# --- determinism -----------------------------------------------------------------------------


@pytest.mark.parametrize("modality,case", [("ct", "amos_0001"), ("mri", "amos_0501")])
def test_same_seed_same_case_other_seed_differs(modality, case, ct_small, mri_small):
    image, label = ct_small if modality == "ct" else mri_small
    image2, label2 = ph.generate_case(case, modality, SMALL, SMALL_SP, SEED)
    np.testing.assert_array_equal(_arr(image), _arr(image2))
    np.testing.assert_array_equal(_arr(label), _arr(label2))
    np.testing.assert_array_equal(image.affine, image2.affine)
    image3, label3 = ph.generate_case(case, modality, SMALL, SMALL_SP, SEED + 1)
    assert not np.array_equal(_arr(image), _arr(image3))
    assert not np.array_equal(_arr(label), _arr(label3))


def test_case_identical_whatever_the_cohort_size(tmp_path):
    arrays = []
    for n_ct in (3, 5):
        root = tmp_path / f"n{n_ct}"
        plan = ph.write_phantom_dataset(root, n_ct, 0, SMALL, SMALL_SP, SEED)
        entry = next(c for c in plan if c["case"] == "amos_0003")
        image, label = nib.load(root / entry["image"]), nib.load(root / entry["label"])
        arrays.append((_arr(image), _arr(label), image.affine))
    assert [c["subset"] for c in ph.phantom_cases(3, 0)][2] != [c["subset"] for c in ph.phantom_cases(5, 0)][2]
    (i3, l3, a3), (i5, l5, a5) = arrays
    np.testing.assert_array_equal(i3, i5)
    np.testing.assert_array_equal(l3, l5)
    np.testing.assert_array_equal(a3, a5)


def test_anatomy_is_defined_in_millimetres(ct_small, ct_default):
    """The same patient on a 2x finer grid: organ volumes and positions agree."""
    _, coarse = ph.generate_case("amos_0002", "ct", SMALL, SMALL_SP, SEED)
    _, fine = ct_default
    for organ in ("liver", "spleen", "stomach", "bladder"):
        v_coarse = (_arr(coarse) == ID[organ]).sum() * np.prod(SMALL_SP)
        v_fine = (_arr(fine) == ID[organ]).sum() * np.prod(ph.DEFAULT_SPACING)
        assert v_coarse == pytest.approx(v_fine, rel=0.2), organ
        assert np.linalg.norm(_centroid(coarse, ID[organ]) - _centroid(fine, ID[organ])) < 8.0, organ


# --- labels ----------------------------------------------------------------------------------


def test_ct_label_set_at_default_size(ct_default):
    image, label = ct_default
    assert label.get_data_dtype() == np.uint8
    present = set(np.unique(_arr(label)).tolist()) - {0}
    assert present <= set(AMOS)
    assert len(present) >= 10
    assert {ID["liver"], ID["spleen"], ID["right kidney"], ID["left kidney"], ID["aorta"], ID["bladder"]} <= present


def test_mri_labels_stop_at_13(mri_small):
    _, label = ph.generate_case("amos_0502", "mri", ph.DEFAULT_SHAPE, ph.DEFAULT_SPACING, SEED)
    for lab in (label, mri_small[1]):
        present = set(np.unique(_arr(lab)).tolist()) - {0}
        assert present and max(present) <= ph.MRI_MAX_LABEL == 13
    assert len(set(np.unique(_arr(label)).tolist()) - {0}) >= 10


def test_organs_in_anatomical_positions(ct_small, mri_small):
    """RAS world: larger x is the patient's right, larger y anterior, larger z superior."""
    for _, label in (ct_small, mri_small):
        names = ("liver", "spleen", "right kidney", "left kidney", "aorta", "postcava", "stomach", "esophagus")
        c = {name: _centroid(label, ID[name]) for name in (*names, "right adrenal gland")}
        assert c["liver"][0] > c["spleen"][0] + 60
        assert c["right kidney"][0] > c["left kidney"][0] + 80
        assert c["postcava"][0] > c["aorta"][0]
        assert c["stomach"][1] > c["aorta"][1]  # stomach anterior to the aorta
        assert c["liver"][2] > c["right kidney"][2]
        assert c["esophagus"][2] > c["right adrenal gland"][2] > c["right kidney"][2]
    bladder = _centroid(ct_small[1], ID["bladder"])
    assert bladder[2] < _centroid(ct_small[1], ID["right kidney"])[2] - 60


# --- intensities -----------------------------------------------------------------------------


def test_ct_hounsfield_units(ct_default):
    image, label = ct_default
    assert image.get_data_dtype() == np.int16
    img, lab = _arr(image), _arr(label)
    liver = binary_erosion(lab == ID["liver"], iterations=2)
    assert liver.sum() > 500
    assert abs(np.median(img[liver]) - 60) < 40
    assert 3 < img[liver].std() < 60  # noise present, but liver still homogeneous
    # Voxel-scale noise (not just the smooth texture): neighbour differences inside the liver.
    pairs = liver[1:] & liver[:-1]
    diffs = np.diff(img.astype(float), axis=0)[pairs]
    assert diffs.std() / np.sqrt(2) > 5
    assert np.median(img[:6, :6, :]) < -900  # air in the FOV corners
    assert np.median(img[lab == ID["aorta"]]) > np.median(img[liver]) + 50  # contrast-enhanced
    assert img.max() > 500  # bone


def test_mri_values_rician_background(mri_small):
    image, label = mri_small
    assert image.get_data_dtype() == np.float32
    img, lab = _arr(image), _arr(label)
    assert img.min() >= 0
    corner = img[:4, :, :4]  # outside the body (stored order L, I, A: right-posterior edge)
    assert np.count_nonzero(corner) > 0.9 * corner.size
    liver = np.median(img[lab == ID["liver"]])
    assert 0 < np.mean(corner) < 0.2 * liver
    assert np.median(img[lab == ID["spleen"]]) < liver  # T1: spleen darker than liver


def _liver_trend(image: nib.Nifti1Image, label: nib.Nifti1Image) -> float:
    """Relative range, over the liver, of a plane fitted to its intensities."""
    img, aff = _canonical(image)
    lab, _ = _canonical(label)
    mask = binary_erosion(lab == ID["liver"], iterations=1)
    xyz = nib.affines.apply_affine(aff, np.argwhere(mask))
    design = np.column_stack([xyz, np.ones(len(xyz))])
    coef, *_ = np.linalg.lstsq(design, img[mask].astype(float), rcond=None)
    fit = design @ coef
    return float((fit.max() - fit.min()) / np.median(img[mask]))


def test_mri_bias_field_present(mri_small, monkeypatch):
    assert _liver_trend(*mri_small) > 0.06

    def flat(x, y, z, rng, amplitude=0.2):
        return np.ones(np.broadcast_shapes(np.shape(x), np.shape(y), np.shape(z)), np.float32)

    monkeypatch.setattr(ph_render, "mri_bias_field", flat)  # where generate_case looks it up
    assert _liver_trend(*ph.generate_case("amos_0501", "mri", SMALL, SMALL_SP, SEED)) < 0.05


def test_bias_field_function():
    x = np.linspace(-150, 150, 31)[:, None, None]
    y = np.linspace(-120, 120, 25)[None, :, None]
    z = np.linspace(-150, 150, 31)[None, None, :]
    for seed in range(5):
        field = ph.mri_bias_field(x, y, z, np.random.default_rng(seed))
        assert field.shape == (31, 25, 31) and field.dtype == np.float32
        assert 0.8 < field.min() and field.max() < 1.2
        assert field.max() / field.min() > 1.1
    a = ph.mri_bias_field(x, y, z, np.random.default_rng(0))
    np.testing.assert_array_equal(a, ph.mri_bias_field(x, y, z, np.random.default_rng(0)))
    assert not np.allclose(a, ph.mri_bias_field(x, y, z, np.random.default_rng(1)))


# --- geometry --------------------------------------------------------------------------------


def test_affines_orientation_and_grids(ct_small, mri_small):
    for (image, label), codes in ((ct_small, ("L", "P", "S")), (mri_small, ph.MRI_AXCODES)):
        assert nib.aff2axcodes(image.affine) == codes
        assert image.shape == label.shape
        np.testing.assert_array_equal(image.affine, label.affine)
        assert not np.allclose(image.affine, np.eye(4))
        zooms = image.header.get_zooms()
        assert len(set(np.round(zooms, 6))) > 1  # anisotropic
        for img in (image, label):
            assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 1
            np.testing.assert_allclose(img.get_qform(), img.affine, atol=1e-4)
        canonical = nib.as_closest_canonical(image)
        assert canonical.shape == SMALL
        np.testing.assert_allclose(canonical.header.get_zooms(), SMALL_SP)
    mri_codes = nib.aff2axcodes(mri_small[0].affine)
    assert mri_codes[1] in ("S", "I") and mri_codes[2] in ("A", "P")  # permuted axes
    assert mri_small[0].shape == (SMALL[0], SMALL[2], SMALL[1])


def test_small_field_of_view_just_cuts_the_body():
    image, label = ph.generate_case("amos_0004", "mri", (6, 5, 4), (2.0, 2.0, 3.0), SEED)
    assert image.shape == label.shape == (6, 4, 5)
    assert np.isfinite(_arr(image)).all()


# --- dataset layout --------------------------------------------------------------------------


def test_write_dataset_layout(tmp_path):
    root = tmp_path / "phantom"
    plan = ph.write_phantom_dataset(root, 3, 2, SMALL, SMALL_SP, SEED, val_fraction=0.4)
    assert plan == ph.phantom_cases(3, 2, 0.4)
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    expected = sorted([c["image"] for c in plan] + [c["label"] for c in plan] + ["dataset.json"])
    assert files == expected  # no leftover temporary files
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["name"] == "AMOS-phantom"
    assert meta["modality"] == {"0": "CT", "1": "MRI"}
    assert meta["labels"] == {"0": "background", **{str(i): n for i, n in AMOS.items()}}
    assert len(meta["labels"]) == 16
    listed = meta["training"] + meta["validation"]
    assert sorted(e["image"] for e in listed) == sorted(f"./{c['image']}" for c in plan)
    assert sorted(e["label"] for e in listed) == sorted(f"./{c['label']}" for c in plan)
    assert all(e["image"].startswith("./imagesVa/") for e in meta["validation"])
    assert meta["numTraining"] == len(meta["training"]) == 3
    assert meta["numValidation"] == len(meta["validation"]) == 2  # round(0.4*3) + round(0.4*2)
    for c in plan:
        number = ph.case_number(c["case"])
        assert (number < 500) == (c["modality"] == "ct")
        image, label = nib.load(root / c["image"]), nib.load(root / c["label"])
        assert image.get_data_dtype() == (np.int16 if c["modality"] == "ct" else np.float32)
        assert label.get_data_dtype() == np.uint8
        np.testing.assert_array_equal(image.affine, label.affine)
        assert image.shape == label.shape
    first = plan[0]
    reference = ph.generate_case(first["case"], first["modality"], SMALL, SMALL_SP, SEED)
    np.testing.assert_array_equal(_arr(nib.load(root / first["image"])), _arr(reference[0]))
