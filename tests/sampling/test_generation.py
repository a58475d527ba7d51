"""The generation experiments: file contract, k per mask, unseen organs in multi-modal runs."""

import numpy as np
import torch
import pytest
from tiny import SCHED, perturbed_model, tiny_slices

from segdiff.data.dataset import stratified_subset
from segdiff.models.diffusion import save_diffusion
from segdiff.sampling.experiments import run_generation
from segdiff.sampling.files import read_generation
from segdiff.sampling.samplers import SamplerSettings


def model_file(tmp_path, classes_seen):
    path = tmp_path / "model.pt"
    save_diffusion(path, perturbed_model(), SCHED, {"classes_seen": classes_seen})  # random weights: seeds matter
    return path


def test_multi_inference_file_contract_and_reconstruction_is_generation_1(tmp_path):
    test = tiny_slices(3)
    out, recon = tmp_path / "multi.npz", tmp_path / "recon.npz"
    model = model_file(tmp_path, [0, 1, 2, 3])
    run_generation(model, test, "multi_inference", SamplerSettings(steps=2), 5, torch.device("cpu"), out, k=3,
                   reconstruction=recon)
    arrays = read_generation(out)
    assert arrays["generated"].shape == (3, 3, 16, 16)
    np.testing.assert_array_equal(arrays["mask"], test.mask)
    np.testing.assert_array_equal(arrays["original"], test.image)
    assert list(arrays["case"]) == list(test.case) and arrays["info"]["k"] == 3 and int(arrays["seed"]) == 5
    # the k generations of a mask differ (one seed per generation, not per mask)
    for j in (1, 2):
        assert np.abs(arrays["generated"][:, 0] - arrays["generated"][:, j]).mean() > 1e-3
    # the reconstruction file is generation 1, and equals sampling the reconstruction on its own
    reconstruction = read_generation(recon)
    assert reconstruction["info"]["mode"] == "reconstruction" and reconstruction["generated"].shape == (3, 1, 16, 16)
    np.testing.assert_array_equal(reconstruction["generated"][:, 0], arrays["generated"][:, 0])
    alone = run_generation(model, test, "reconstruction", SamplerSettings(steps=2), 5, torch.device("cpu"),
                           tmp_path / "alone.npz", k=3)
    np.testing.assert_allclose(alone["generated"][:, 0], arrays["generated"][:, 0], atol=1e-5)
    with pytest.raises(ValueError, match="multi-inference"):
        run_generation(model, test, "multimodal", SamplerSettings(steps=2), 5, torch.device("cpu"), out, k=2,
                       reconstruction=recon)


def test_stratified_subset_is_seeded_proportional_and_independent_of_other_groups():
    case = np.array(["a"] * 30 + ["b"] * 10)
    view = np.array(["axial"] * 20 + ["coronal"] * 10 + ["axial"] * 10)
    chosen = stratified_subset(case, view, 8, seed=1)
    assert len(chosen) == 8 and np.all(np.diff(chosen) > 0)
    groups = [f"{c}/{v}" for c, v in zip(case[chosen], view[chosen])]
    assert groups.count("a/axial") == 4 and groups.count("a/coronal") == 2 and groups.count("b/axial") == 2
    np.testing.assert_array_equal(chosen, stratified_subset(case, view, 8, seed=1))
    assert not np.array_equal(chosen, stratified_subset(case, view, 8, seed=2))
    # a group's picks do not depend on the rest of the set (same quota -> same slices)
    alone = stratified_subset(case[30:], view[30:], 2, seed=1) + 30
    np.testing.assert_array_equal(chosen[[g == "b/axial" for g in groups]], alone)
    np.testing.assert_array_equal(stratified_subset(case, view, 100, seed=1), np.arange(40))


def test_multimodal_sets_organs_the_model_never_saw_to_background(tmp_path):
    test = tiny_slices(2)
    assert (test.mask == 3).any()
    out = tmp_path / "cross.npz"
    run_generation(model_file(tmp_path, [0, 1, 2]), test, "multimodal", SamplerSettings(steps=2), 5,
                   torch.device("cpu"), out, k=3)
    arrays = read_generation(out)
    assert arrays["generated"].shape[1] == 3  # k generations per mask: the diversity of the multi-modal run
    assert not (arrays["mask"] == 3).any()
    np.testing.assert_array_equal(arrays["mask"][test.mask != 3], test.mask[test.mask != 3])
    assert arrays["info"]["classes_set_to_background"] == [3]
