"""The oracle-free quality gate: texture ratio, k-spread and the flags, on stand-in generators; organ-only regions."""

import json

import numpy as np
import pytest
from scipy import ndimage

from segdiff.evaluation.metrics import diversity
from segdiff.evaluation.quality import (DICE_RATIO_MIN, K_SPREAD_MIN, TEXTURE_RATIO_MIN, organ_region, quality_flags,
                                        quality_numbers)
from segdiff.evaluation.run import recompute_metrics
from segdiff.report.tables import build_tables, quality_warnings, table_notes

ORGANS = [1, 2, 3]
LEVELS = {0: 0.1, 1: 0.35, 2: 0.6, 3: 0.85}


def masks(n=6, size=32):
    """Three organs per slice, the largest touching the second (an organ-organ edge), shifted slice by slice."""
    mask = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        mask[i, 4 + i % 3 : 16 + i % 3, 4:18] = 1
        mask[i, 4 + i % 3 : 16 + i % 3, 18:28] = 2
        mask[i, 20:29, 6 + i % 4 : 17 + i % 4] = 3
    return mask


def render(mask, k, seed):
    """k renders of each mask: one intensity per class, a fresh smooth gain and fine texture per render."""
    rng = np.random.default_rng(seed)
    base = np.vectorize(LEVELS.get)(mask).astype(np.float64)
    texture = ndimage.gaussian_filter(rng.normal(0, 0.06, (len(mask), k, *mask.shape[1:])), [0, 0, 0.6, 0.6])
    gain = 1 + rng.normal(0, 0.03, (len(mask), k, 1, 1))
    return np.clip(base[:, None] * gain + texture, 0, 1).astype(np.float32)


def regressor(mask, k):
    """The stand-in that regresses to the mean: each class painted with one intensity, the k generations identical."""
    return np.repeat(np.vectorize(LEVELS.get)(mask).astype(np.float32)[:, None], k, axis=1)


def arrays(generated, mask, reference_image, reference_mask, pred_generated=None, oracle=None):
    out = {"generated": generated, "original": reference_image, "mask": mask, "reference_image": reference_image,
           "reference_mask": reference_mask, "paired": np.bool_(False), "pred_reference": reference_mask.copy(),
           "pred_generated": mask.copy() if pred_generated is None else pred_generated}
    if oracle is not None:
        out.update(oracle=oracle, pred_oracle=mask.copy())
    return out


@pytest.fixture(scope="module")
def study():
    mask = masks()
    real = render(mask, 1, seed=0)[:, 0]
    return {"mask": mask, "real": real, "textured": render(mask, 4, seed=1), "oracle": render(mask, 4, seed=2),
            "flat": regressor(mask, 4)}


def eroded_by_minimum(mask, organs, px=2):
    """Independent erosion: a pixel stays when its (2 px + 1)^2 square is all one organ (outside the image: not)."""
    out = np.zeros(mask.shape, bool)
    for c in organs:
        for i in range(len(mask)):
            out[i] |= ndimage.minimum_filter((mask[i] == c).astype(np.uint8), size=2 * px + 1, mode="constant") > 0
    return out


def test_organ_region_erodes_each_organ_alone_and_ignores_other_ids(study):
    mask = study["mask"].copy()
    mask[mask == 0] = 4  # a body envelope: not an organ
    region = organ_region(mask, ORGANS, erosion=2)
    np.testing.assert_array_equal(region, eroded_by_minimum(mask, ORGANS))
    assert not region[:, :19, 16:20].any()  # the edge between organs 1 and 2 (columns 17|18) is out
    assert region[0, 6:14, 6:16].all()  # organ 1 away from its edges is in
    np.testing.assert_array_equal(organ_region(mask, ORGANS, erosion=0), np.isin(mask, ORGANS))
    box = np.zeros((1, 9, 9), np.uint8)
    box[0, 1:8, 1:8] = 1
    assert organ_region(box, [1]).sum() == 9  # 7 x 7 -> 3 x 3


def test_regressor_is_flagged_on_texture_and_k_spread(study):
    mask, real = study["mask"], study["real"]
    metrics = recompute_metrics(arrays(study["flat"], mask, real, mask), ORGANS, 4)
    assert metrics["texture_ratio"] < 0.1 * TEXTURE_RATIO_MIN and metrics["k_spread"] == 0.0
    assert [f.split(" ")[0] for f in metrics["quality_flags"]] == ["texture", "k-spread"]
    assert "regression to the mean" in metrics["quality_flags"][0] and "identical" in metrics["quality_flags"][1]


def test_textured_generations_pass_and_match_an_independent_computation(study):
    mask, real, gen = study["mask"], study["real"], study["textured"]
    metrics = recompute_metrics(arrays(gen, mask, real, mask, oracle=study["oracle"]), ORGANS, 4)
    assert metrics["quality_flags"] == []
    assert 0.7 < metrics["texture_ratio"] < 1.4 and metrics["k_spread"] > 5 * K_SPREAD_MIN
    # numpy/scipy, slice by slice
    region = eroded_by_minimum(mask, ORGANS)
    hp = lambda image: image.astype(np.float64) - ndimage.gaussian_filter(image.astype(np.float64), 1.0)
    real_hp = np.concatenate([hp(real[i])[region[i]] for i in range(len(mask))])
    gen_energy = np.mean(np.concatenate([hp(gen[i, j])[region[i]] ** 2 for i in range(len(mask)) for j in range(4)]))
    assert metrics["texture_ratio"] == pytest.approx(gen_energy / np.mean(real_hp ** 2), rel=1e-9)
    spread = np.concatenate([gen[i].std(axis=0, dtype=np.float64)[region[i]] for i in range(len(mask))]).mean()
    assert metrics["k_spread"] == pytest.approx(spread / real_hp.std(), rel=1e-9)
    # diversity outside the organs: generations vs oracle
    outside = mask == 0
    assert metrics["diversity_outside_gen"] == pytest.approx(gen.std(axis=1)[outside].mean(), rel=1e-6)
    assert metrics["diversity_outside_oracle"] == pytest.approx(study["oracle"].std(axis=1)[outside].mean(), rel=1e-6)
    assert metrics["diversity_outside_ratio"] == pytest.approx(
        metrics["diversity_outside_gen"] / metrics["diversity_outside_oracle"], rel=1e-9)


def test_generations_that_ignore_their_masks_are_flagged_on_dice(study):
    mask, real = study["mask"], study["real"]
    ignored = np.zeros_like(mask)
    ignored[:, 10:30, 2:12] = 2  # the segmentor finds organ 2 where the masks have organs 1 and 3
    metrics = recompute_metrics(arrays(study["textured"], mask, real, mask, pred_generated=ignored), ORGANS, 4)
    assert metrics["dice_ratio"] < DICE_RATIO_MIN
    assert len(metrics["quality_flags"]) == 1 and metrics["quality_flags"][0].startswith(
        f"Dice ratio {metrics['dice_ratio']:.2f} < 0.8: the generations do not follow their masks")


def test_a_body_id_changes_no_organ_metric_and_does_not_crash_poster_dice(study):
    mask, real, gen, oracle = study["mask"], study["real"], study["textured"], study["oracle"]
    body = mask.copy()
    body[:, 2:30, 2:30][body[:, 2:30, 2:30] == 0] = 4  # label map max id 3 -> body id 4
    pred = body.copy()
    pred[:, 0, 0] = 4  # and predicted where the mask has background
    plain = recompute_metrics(arrays(gen, mask, real, mask, oracle=oracle), ORGANS, 4)
    with_body = recompute_metrics(arrays(gen, body, real, body, pred_generated=pred, oracle=oracle), ORGANS, 4)
    for key in ("dice_gen", "dice_orig", "dice_oracle", "dice_gen_poster", "dice_orig_poster", "diversity_gen",
                "diversity_oracle", "diversity_ratio", "diversity_outside_gen", "diversity_outside_ratio",
                "texture_ratio", "k_spread"):
        assert with_body[key] == pytest.approx(plain[key], rel=1e-12), key
    assert diversity(gen, body, organs=ORGANS) == pytest.approx(diversity(gen, mask))
    assert diversity(gen, body)["inside"] != pytest.approx(diversity(gen, mask)["inside"])  # without organs: body is inside


def test_one_generation_per_mask_has_no_k_spread_and_is_not_flagged_for_it(study):
    mask, real = study["mask"], study["real"]
    assert quality_numbers(study["textured"][:, :1], mask, real, mask, ORGANS)["k_spread"] is None
    metrics = recompute_metrics(arrays(study["textured"][:, :1], mask, real, mask), ORGANS, 4)
    assert metrics["k_spread"] is None and metrics["diversity_gen"] is None and metrics["quality_flags"] == []
    # no organ pixel left after erosion: no number, no flag
    tiny = np.zeros_like(mask)
    tiny[:, 5:8, 5:8] = 1
    assert quality_numbers(study["textured"], tiny, real, mask, ORGANS)["texture_ratio"] is None
    assert quality_flags(None, None, None) == [] and quality_flags(float("nan"), 0.5, 1.0) == []


def test_table_row_notes_and_workflow_warnings(tmp_path, study):
    mask, real = study["mask"], study["real"]
    files = []
    for label, generated in (("CT axial", study["textured"]), ("CT→MRI axial", study["flat"])):
        metrics = recompute_metrics(arrays(generated, mask, real, mask), ORGANS, 4)
        record = {**{key: value for key, value in metrics.items() if not key.endswith("_per_class")}, "label": label,
                  "mode": "multimodal" if "→" in label else "multi_inference", "n_slices": len(mask), "k": 4,
                  "oracle": False, "n_dropped_empty": 3 if "→" in label else 0}
        files.append(tmp_path / f"{len(files)}.json")
        files[-1].write_text(json.dumps(record))
    wide, long = build_tables(files)
    assert wide.loc["Quality flags", "CT axial"] == "ok"
    assert wide.loc["Quality flags", "CT→MRI axial"] == "⚠ texture ratio, k-spread"
    assert wide.loc["k-spread (std across the k generations / real fine-texture std)", "CT→MRI axial"] == "0.000"
    assert float(wide.loc["Texture ratio, generations / real (high-pass energy inside organs)", "CT axial"]) > 0.7
    assert long.query("run == 'CT→MRI axial' and metric == 'quality_flags'")["value"].item() == "⚠ texture ratio, k-spread"
    notes = table_notes(files)
    flagged = [n for n in notes if n.startswith("Quality flags")]
    assert len(flagged) == 1 and flagged[0].startswith("Quality flags, CT→MRI axial: texture ratio 0.01 < 0.1: ")
    assert "regression to the mean" in flagged[0] and "(nearly) identical" in flagged[0]
    assert any(n.startswith("CT→MRI axial: 3 source test slice(s) dropped") for n in notes)
    assert not any(n.startswith("CT axial: ") for n in notes)  # not multi-modal: no dropped-slices note
    warnings = quality_warnings([*files, tmp_path / "not_evaluated_yet.json"])
    assert len(warnings) == 2 and all(w.startswith(f"WARNING: CT→MRI axial ({files[1]}): quality flag: ") for w in warnings)
    assert quality_warnings(files[:1]) == []
