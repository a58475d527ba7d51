"""TotalVibeSegmentator as a mask source: label tables, weight lookup, and the real TPTBox / nnU-Net v2 inference
on a tiny model folder in the released layout (tests/nnunet_model.py)."""

from __future__ import annotations

import json
import time
import zipfile

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from amos_fixture import serve
from nnunet_model import write_tiny_totalvibe_model
from studies import TINY_MODEL, snakemake

from segdiff.models.diffusion import load_diffusion
from segdiff.core.errors import WeightsUnavailable
from segdiff.core.labels import load_label_map, load_remap
from segdiff.sources.phantom import write_phantom_dataset
from segdiff.models.segmentor import load_segmentor
from segdiff.data.shards import read_shard
from segdiff.sources.totalvibe import DATASET_ID, FETCH_HINT, WEIGHTS_ENV, find_model, label_disagreements, model_labels, segment_volume

TOTALVIBE = load_label_map("totalvibe")
AMOS = load_label_map("amos15")


def test_totalvibe_label_map_is_the_released_models_list():
    from TPTBox.segmentation.VibeSeg.vibeseg import VibeSeg_map  # the installed package's own list

    assert TOTALVIBE.ids == [i for i in range(1, 73) if i != 20] and TOTALVIBE.max_id == 72  # one-hot width 73
    assert {i: n for i, n in VibeSeg_map.items() if i != 20} == TOTALVIBE.names
    assert VibeSeg_map[20].startswith("unused")


def test_totalvibe_to_amos_pairs_the_same_organs():
    remap = load_remap("totalvibe_to_amos", AMOS)
    assert remap.table == {1: 1, 2: 2, 3: 3, 4: 4, 5: 6, 6: 7, 7: 10, 8: 11, 9: 12, 15: 5, 19: 13, 21: 14, 22: 15, 25: 8, 36: 9}
    assert sorted(remap.table.values()) == AMOS.ids  # every AMOS organ once
    # the same organ under both names (AMOS writes "postcava" for the inferior vena cava, "bladder" for the urinary one)
    synonyms = {"postcava": "inferior vena cava", "gall bladder": "gallbladder", "bladder": "urinary bladder",
                "prostate/uterus": "prostate"}
    for source, target in remap.table.items():
        amos = AMOS.names[target].lower()
        amos = synonyms.get(amos, amos)
        words = TOTALVIBE.names[source].replace("_", " ")
        words = words.replace("adrenal gland right", "right adrenal gland").replace("adrenal gland left", "left adrenal gland")
        words = words.replace("kidney right", "right kidney").replace("kidney left", "left kidney")
        assert words == amos, (source, target)


def test_totalsegmentator_remap_keeps_all_15_amos_organs():
    assert sorted(load_remap("totalsegmentator_to_amos", AMOS).table.values()) == AMOS.ids


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """``<root>/nnUNet_results/Dataset100_TotalVibeSegmentator/...``: TPTBox's cache layout under the root."""
    root = tmp_path_factory.mktemp("totalvibe_weights")
    model = write_tiny_totalvibe_model(root / "nnUNet_results", TOTALVIBE.names)
    return root, model


@pytest.fixture(scope="module")
def phantom_ct(tmp_path_factory):
    folder = tmp_path_factory.mktemp("phantom")
    case = write_phantom_dataset(folder, 1, 0, (48, 40, 24), (8.0, 8.0, 12.0), 3, 0.0)[0]
    return folder / case["image"]


def test_missing_weights_is_one_line_naming_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path))
    with pytest.raises(WeightsUnavailable) as err:
        find_model()
    message = str(err.value)
    assert "\n" not in message and f"{WEIGHTS_ENV} = {tmp_path}" in message
    assert f"set {WEIGHTS_ENV}" in message and "download_weights(100)" in message
    monkeypatch.delenv(WEIGHTS_ENV)
    monkeypatch.setenv("VIBESEG_WEIGHTS_PATH", str(tmp_path))  # TPTBox's own cache variable, empty
    with pytest.raises(WeightsUnavailable, match=f"set {WEIGHTS_ENV} .*looked in: TPTBox's cache VIBESEG_WEIGHTS_PATH = {tmp_path}"):
        find_model()


def test_weights_found_in_either_layout(tiny_model, monkeypatch):
    root, model = tiny_model
    for variable in (root, root / "nnUNet_results"):  # the folder above nnUNet_results, or nnUNet_results itself
        monkeypatch.setenv(WEIGHTS_ENV, str(variable))
        assert find_model() == model
    monkeypatch.delenv(WEIGHTS_ENV)
    monkeypatch.setenv("VIBESEG_WEIGHTS_PATH", str(root / "nnUNet_results"))
    assert find_model() == model


def test_the_fetch_command_of_the_message_gives_weights_find_model_finds(tiny_model, tmp_path, monkeypatch):
    """FETCH_HINT's command (TPTBox's release download of dataset 100) against a loopback copy of the release."""
    from TPTBox.segmentation.VibeSeg import auto_download

    _, model = tiny_model
    release = tmp_path / "release"
    release.mkdir()
    with zipfile.ZipFile(release / "100.zip", "w") as archive:  # the release zip holds the trainer folder
        for path in model.rglob("*"):
            archive.write(path, path.relative_to(model.parent))
    dest = tmp_path / "weights"
    monkeypatch.setenv("VIBESEG_WEIGHTS_PATH", str(dest))
    with serve(release) as server:
        monkeypatch.setattr(auto_download, "WEIGHTS_URL_", server.base_url + "/")
        auto_download.download_weights(DATASET_ID)
    monkeypatch.delenv("VIBESEG_WEIGHTS_PATH")
    monkeypatch.setenv(WEIGHTS_ENV, str(dest))  # "then export TOTALVIBE_WEIGHTS_PATH=DIR"
    found = find_model()
    assert found.parent == dest / f"Dataset{DATASET_ID}" and model_labels(found) == model_labels(model)
    assert "download_weights(100)" in FETCH_HINT and "VIBESEG_WEIGHTS_PATH=DIR" in FETCH_HINT


def test_label_disagreements_name_the_id(tiny_model, tmp_path):
    _, model = tiny_model
    assert label_disagreements(model_labels(model), TOTALVIBE) == []  # the "unused" id 20 is no structure
    shipped = {**model_labels(model), 65: "outer_skin"}  # the README's name for TPTBox's subcutaneous_fat
    del shipped[72]
    assert label_disagreements(shipped, TOTALVIBE) == [
        "id 72 (bone_other) of the label map is not in the model's label list",
        "id 65: model says 'outer_skin', label map says 'subcutaneous_fat'",
    ]


def test_tiny_model_runs_the_real_inference_path(tiny_model, phantom_ct, tmp_path, monkeypatch, capsys):
    root, model = tiny_model
    monkeypatch.setenv(WEIGHTS_ENV, str(root))
    out = tmp_path / "masks/case.nii.gz"
    t0 = time.perf_counter()
    info = segment_volume(phantom_ct, out, device="cpu")
    wall = time.perf_counter() - t0
    image, mask = nib.load(phantom_ct), nib.load(out)
    assert mask.shape == image.shape and np.array_equal(mask.affine, image.affine)  # the image's grid (LPS phantom)
    assert mask.get_data_dtype() == np.uint8
    labels = np.asarray(mask.dataobj)
    ids = set(np.unique(labels).tolist()) - {0}
    assert ids == set(info.ids) and ids <= set(TOTALVIBE.ids) and len(ids) >= 3  # random weights: many structures
    assert info.model == model
    assert [p.name for p in out.parent.iterdir()] == ["case.nii.gz"]  # written atomically, no temporary left
    with capsys.disabled():
        print(f"\n[totalvibe] tiny nnU-Net v2 model, {image.shape} volume on the CPU: inference {info.seconds:.2f} s, "
              f"segment_volume {wall:.2f} s")
    # TPTBox's own entry point for dataset 100 (weights from its model_path) gives the same labels
    from TPTBox.segmentation import run_vibeseg

    theirs = run_vibeseg(str(phantom_ct), None, dataset_id=100, model_path=root, ddevice="cpu", override=True)
    np.testing.assert_array_equal(np.asarray(theirs.get_seg_array()), labels)


def test_unreadable_image_names_the_file_before_loading_the_model(tiny_model, tmp_path, monkeypatch):
    from segdiff.core.errors import InputError

    monkeypatch.setenv(WEIGHTS_ENV, str(tiny_model[0]))
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a nifti")
    with pytest.raises(InputError, match="bad.nii.gz: not a readable NIfTI"):
        segment_volume(bad, tmp_path / "out.nii.gz", device="cpu")
    assert not (tmp_path / "out.nii.gz").exists()


def test_model_dataset_json_is_checked(tmp_path):
    from segdiff.core.errors import InputError

    (tmp_path / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MRI"}}))
    with pytest.raises(InputError, match="dataset.json: not an nnU-Net v2 dataset.json with a 'labels' table"):
        model_labels(tmp_path)


# ------------------------------------------------------------------------------- workflow (dataset.mask_source)

TOTALVIBE_STUDY = {
    "seed": 3,
    "dataset": {"labels": "totalvibe", "mask_source": "totalvibe"},
    "phantom": {"n_ct": 3, "n_mri": 0, "shape": [48, 40, 24], "spacing": [8.0, 8.0, 12.0]},
    "views": ["axial"],
    "preprocess": {"image_size": 16, "min_foreground": 4},
    "diffusion": {"runs": ["ct/axial"], "model": TINY_MODEL,
                  "scheduler": {"num_train_timesteps": 20, "prediction_type": "v_prediction", "min_snr_gamma": 5},
                  "train": {"steps": 4, "batch_size": 4, "checkpoint_every": 2, "warmup_steps": 1}},
    "sampling": {"steps": 3, "k": 2, "batch_size": 8, "multimodal": []},
    "segmentor": {"model": {"channels": [8, 16], "strides": [2]}, "train": {"steps": 4, "batch_size": 8, "warmup_steps": 1}},
    "evaluation": {"max_slices": 12},
}


@pytest.mark.workflow
def test_missing_weights_stop_the_study_before_any_job(tmp_path):
    proc = snakemake(tmp_path / "run", TOTALVIBE_STUDY, check=False, env={WEIGHTS_ENV: str(tmp_path / "nothing")})
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    lines = [line for line in output.splitlines() if "TotalVibeSegmentator weights not found" in line]
    assert len(lines) == 1 and f"set {WEIGHTS_ENV} to the folder" in lines[0] and "download_weights(100)" in lines[0]
    assert not (tmp_path / "run/results").exists() and "Job stats" not in output


@pytest.mark.workflow
def test_totalvibe_masks_drive_a_72_class_study(tiny_model, tmp_path):
    """phantom -> TotalVibeSegmentator masks (tiny random model) -> slices -> diffusion + segmentor with 73
    classes -> sampling -> evaluation with per-organ Dice -> table and figures."""
    run = tmp_path / "run"
    snakemake(run, TOTALVIBE_STUDY, env={WEIGHTS_ENV: str(tiny_model[0])})
    results = run / "results"
    cases = pd.read_csv(results / "data/cases.tsv", sep="\t")
    assert list(cases["label"]) == [f"results/masks/totalvibe/{c}.nii.gz" for c in cases["case"]]  # replaces the labels
    for case in cases.itertuples():
        image, mask = nib.load(run / case.image), nib.load(run / case.label)
        assert mask.shape == image.shape and np.array_equal(mask.affine, image.affine)
        assert mask.get_data_dtype() == np.uint8
        assert "structures in" in (run / f"logs/masks/totalvibe/{case.case}.log").read_text()
        assert (run / f"benchmarks/masks/totalvibe/{case.case}.tsv").exists()
    ids = set()
    for shard in (results / "slices/ct/axial").glob("*.npz"):
        ids |= set(np.unique(read_shard(shard).mask).tolist())
    assert ids - {0} <= set(TOTALVIBE.ids) and max(ids) > 15 and len(ids) > 5
    model, _, _ = load_diffusion(results / "models/diffusion/ct_axial.pt")
    segmentor, config, _ = load_segmentor(results / "models/segmentor/ct.pt")
    assert model.config.num_classes == config.num_classes == 73  # one-hot width: background + ids up to 72
    metrics = json.loads((results / "evaluation/ct_axial/metrics.json").read_text())
    per_organ = metrics["per_organ"]
    assert set(per_organ) <= set(TOTALVIBE.names.values()) and len(per_organ) > 5
    scores = [v for organ in per_organ.values() for v in (organ["dice_orig"], organ["dice_gen"]) if v is not None]
    assert scores and all(0.0 <= v <= 1.0 for v in scores)
    assert 0.0 <= metrics["dice_orig"] <= 1.0 and 0.0 <= metrics["dice_gen"] <= 1.0
    for figure, size in (("slices_preview", 3_000), ("dice_per_organ", 10_000), ("generations", 10_000)):
        assert (results / f"figures/{figure}.png").stat().st_size > size
    assert not (results / "oracle").exists()  # the phantom's oracle renders its own labels, not these masks
