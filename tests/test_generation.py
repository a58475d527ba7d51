"""The generation experiments: file contract, k per mask, unseen organs in multi-modal runs."""

import numpy as np
import torch
from test_diffusion import SCHED, TINY, tiny_slices

from segdiff.diffusion import DenoiserConfig, SegGuidedDenoiser, save_diffusion
from segdiff.generation import read_generation, run_generation
from segdiff.sampling import SamplerSettings


def model_file(tmp_path, classes_seen):
    torch.manual_seed(0)
    path = tmp_path / "model.pt"
    save_diffusion(path, SegGuidedDenoiser(DenoiserConfig(**TINY)), SCHED, {"classes_seen": classes_seen})
    return path


def test_multi_inference_file_contract(tmp_path):
    test = tiny_slices(3)
    out = tmp_path / "multi.npz"
    run_generation(model_file(tmp_path, [0, 1, 2, 3]), test, "multi_inference", SamplerSettings(steps=2), 5,
                   torch.device("cpu"), out, k=3)
    arrays = read_generation(out)
    assert arrays["generated"].shape == (3, 3, 16, 16)
    np.testing.assert_array_equal(arrays["mask"], test.mask)
    np.testing.assert_array_equal(arrays["original"], test.image)
    assert list(arrays["case"]) == list(test.case) and arrays["info"]["k"] == 3 and int(arrays["seed"]) == 5


def test_multimodal_sets_organs_the_model_never_saw_to_background(tmp_path):
    test = tiny_slices(2)
    assert (test.mask == 3).any()
    out = tmp_path / "cross.npz"
    run_generation(model_file(tmp_path, [0, 1, 2]), test, "multimodal", SamplerSettings(steps=2), 5,
                   torch.device("cpu"), out, k=3)
    arrays = read_generation(out)
    assert arrays["generated"].shape[1] == 1  # one generation per mask, k applies to multi-inference only
    assert not (arrays["mask"] == 3).any()
    np.testing.assert_array_equal(arrays["mask"][test.mask != 3], test.mask[test.mask != 3])
    assert arrays["info"]["classes_set_to_background"] == [3]
