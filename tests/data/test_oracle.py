"""Oracle renders: same anatomy bit for bit, fresh acquisition; the diversity yardstick built on them."""

import numpy as np
import pytest
from conftest import PHANTOM_SHAPE, PHANTOM_SPACING

from segdiff.core.errors import InputError
from segdiff.core.labels import load_label_map
from segdiff.evaluation.metrics import diversity_ratio
from segdiff.data.oracle import OracleJob, case_oracle, gather_oracle, read_oracle, render_oracle, write_oracle
from segdiff.sources.phantom import generate_case
from segdiff.data.slicing import normalise, slice_volume
from segdiff.sources.volumes import load_case

SHAPE, SPACING = PHANTOM_SHAPE, PHANTOM_SPACING
PHANTOM = {"shape": list(SHAPE), "spacing": list(SPACING)}
PRE = {"image_size": 24, "min_foreground": 4, "ct_window": (-175, 250), "mri_percentiles": (0.5, 99.5)}
LABELS = load_label_map("amos15")


@pytest.mark.parametrize("case,modality", [("amos_0001", "ct"), ("amos_0501", "mri")])
def test_renders_share_the_label_volume_bit_for_bit_and_differ_in_the_image(case, modality):
    image0, label0 = generate_case(case, modality, SHAPE, SPACING, seed=3)
    images = [np.asarray(image0.dataobj)]
    for r in (1, 2):
        image, label = generate_case(case, modality, SHAPE, SPACING, seed=3, render=r)
        np.testing.assert_array_equal(np.asarray(label.dataobj), np.asarray(label0.dataobj))
        np.testing.assert_array_equal(image.affine, image0.affine)
        images.append(np.asarray(image.dataobj))
    inside = np.asarray(label0.dataobj) > 0
    for a, b in ((0, 1), (1, 2), (0, 2)):
        assert np.mean(images[a][inside] != images[b][inside]) > 0.9
    # a render is reproducible: it depends on (seed, case, render) only
    again, _ = generate_case(case, modality, SHAPE, SPACING, seed=3, render=2)
    np.testing.assert_array_equal(np.asarray(again.dataobj), images[2])


def test_render_must_be_a_non_negative_integer():
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="render"):
            generate_case("amos_0001", "ct", SHAPE, SPACING, seed=3, render=bad)


def test_oracle_slices_are_the_shards_slices_with_k_fresh_images(phantom_ct_case, tmp_path):
    volume = load_case(phantom_ct_case / "image.nii.gz", phantom_ct_case / "label.nii.gz", LABELS)
    normalised = normalise(volume.image, "ct", PRE["ct_window"], PRE["mri_percentiles"])
    real = slice_volume(volume, "ct", "axial", PRE["image_size"], PRE["min_foreground"], normalised=normalised)
    renders = render_oracle("amos_0002", "ct", phantom_ct_case / "label.nii.gz", PHANTOM, 3, 3, LABELS, ["axial", "coronal"], **PRE)
    axial = renders["axial"]
    assert axial["image"].shape == (len(real.slice), 3, 24, 24)
    np.testing.assert_array_equal(axial["mask"], real.mask)
    np.testing.assert_array_equal(axial["slice"], real.slice)
    assert 0 <= axial["image"].min() and axial["image"].max() <= 1
    inside = axial["mask"] > 0
    spread = axial["image"].std(axis=1)[inside].mean()
    assert spread > 0.005  # fresh noise and contrast per render
    # ... around the same anatomy: the renders are closer to each other than to a shuffled slice
    assert np.abs(axial["image"][:, 0] - axial["image"][:, 1]).mean() < np.abs(axial["image"][:, 0] - axial["image"][::-1, 1]).mean()
    paths = {v: tmp_path / v / "amos_0002.npz" for v in renders}
    write_oracle(renders, paths)
    np.testing.assert_array_equal(read_oracle(paths["axial"])["image"], axial["image"])
    # an MRI render of the CT anatomy: the ground truth of CT mask -> MRI image
    mri = render_oracle("amos_0002", "mri", phantom_ct_case / "label.nii.gz", PHANTOM, 3, 2, LABELS, ["axial"], **PRE)["axial"]
    np.testing.assert_array_equal(mri["mask"], real.mask)
    assert np.abs(mri["image"][:, 0] - axial["image"][:, 0]).mean() > 0.05


def test_oracle_job_writes_the_renders_of_each_view(phantom_ct_case, tmp_path):
    outputs = (str(tmp_path / "axial" / "amos_0002.npz"), str(tmp_path / "sagittal" / "amos_0002.npz"))
    case_oracle(OracleJob(case="amos_0002", contrast="mri", label_path=phantom_ct_case / "label.nii.gz", phantom=PHANTOM, seed=3,
                          k=2, labels=LABELS, image_size=PRE["image_size"], min_foreground=PRE["min_foreground"],
                          ct_window=None, mri_percentiles=PRE["mri_percentiles"], outputs=outputs))
    renders = render_oracle("amos_0002", "mri", phantom_ct_case / "label.nii.gz", PHANTOM, 3, 2, LABELS, ["axial", "sagittal"], **PRE)
    for view, path in zip(("axial", "sagittal"), outputs):
        written = read_oracle(path)
        assert written.keys() == renders[view].keys()
        for key, array in renders[view].items():
            np.testing.assert_array_equal(written[key], array)


def test_gather_oracle_follows_the_generations_order_and_checks_anatomy(tmp_path):
    rng = np.random.default_rng(0)
    files = []
    for case in ("a", "b"):
        arrays = {"image": rng.random((3, 2, 4, 4), dtype=np.float32), "mask": rng.integers(0, 3, (3, 4, 4)).astype(np.uint8),
                  "slice": np.array([5, 7, 9], np.int32)}
        files.append(tmp_path / "axial" / f"{case}.npz")
        write_oracle({"axial": arrays}, {"axial": files[-1]})
    a, b = read_oracle(files[0]), read_oracle(files[1])
    case = np.array(["b", "a", "a"])
    view = np.array(["axial"] * 3)
    slices = np.array([9, 5, 7])
    mask = np.stack([b["mask"][2], a["mask"][0], a["mask"][1]])
    out = gather_oracle(files, case, view, slices, mask)
    np.testing.assert_array_equal(out, np.stack([b["image"][2], a["image"][0], a["image"][1]]))
    with pytest.raises(InputError, match="no oracle render of slice"):
        gather_oracle(files, case, view, np.array([9, 5, 6]))
    with pytest.raises(InputError, match="differ from the generations' masks"):
        gather_oracle(files, case, view, slices, mask[::-1])
    with pytest.raises(InputError, match="no oracle file for c"):
        gather_oracle(files, np.array(["c"]), np.array(["axial"]), np.array([5]))
    # multi-modal runs drop organs the model never saw: compared with those set to background
    dropped = np.where(mask == 2, 0, mask)
    np.testing.assert_array_equal(gather_oracle(files, case, view, slices, dropped, ignore=[2]), out)


def test_diversity_ratio_against_the_oracle(phantom_ct_case):
    renders = render_oracle("amos_0002", "ct", phantom_ct_case / "label.nii.gz", PHANTOM, 3, 8, LABELS, ["axial"], **PRE)["axial"]
    images, mask = renders["image"], renders["mask"]
    # oracle vs oracle (renders 1-4 vs 5-8): a perfect generator scores about 1
    assert 0.8 < diversity_ratio(images[:, 4:], images[:, :4], mask) < 1.25
    # k identical generations: 0
    assert diversity_ratio(np.repeat(images[:, :1], 4, axis=1), images[:, :4], mask) == 0
    # a stand-in "model" that paints each organ with its mean intensity fails the goal [0.5, 1.5],
    # even with a little per-generation jitter of the organ's value
    rng = np.random.default_rng(1)
    means = {c: images[:, 0][mask == c].mean() for c in np.unique(mask)}
    painted = np.stack([np.vectorize(lambda c: means[c] + rng.normal(0, 0.002))(mask).astype(np.float32) for _ in range(4)], 1)
    assert diversity_ratio(painted, images[:, :4], mask) < 0.5
