"""Case sheet validation and seeded, case-level, disjoint splits."""

import json

import pandas as pd
import pytest
from conftest import CASES_SCHEMA

from segdiff.sources.casesheet import assign_splits, read_case_sheet, sheet_from_amos
from segdiff.core.errors import InputError


def write_sheet(tmp_path, rows, touch=True):
    for row in rows:
        for col in ("image", "label"):
            if touch:
                (tmp_path / row[col]).touch()
    path = tmp_path / "cases.tsv"
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return path


def rows(n, modality="ct", split=""):
    return [{"case": f"{modality}{i:03d}", "modality": modality, "image": f"{modality}{i}_img.nii.gz",
             "label": f"{modality}{i}_lab.nii.gz", "split": split} for i in range(n)]


def test_relative_paths_resolve_against_sheet_folder(tmp_path):
    sheet = read_case_sheet(write_sheet(tmp_path, rows(2)), CASES_SCHEMA)
    assert sheet["image"].iloc[0] == str((tmp_path / "ct0_img.nii.gz").resolve())


def test_missing_file_names_row_and_column(tmp_path):
    path = write_sheet(tmp_path, rows(3))
    (tmp_path / "ct1_lab.nii.gz").unlink()
    with pytest.raises(InputError, match=r"cases.tsv: row 3 \(case 'ct001'\), column 'label': file not found"):
        read_case_sheet(path, CASES_SCHEMA)


def test_unknown_modality(tmp_path):
    bad = rows(2)
    bad[1]["modality"] = "pet"
    with pytest.raises(InputError, match=r"cases.tsv: row 3 \(case 'ct001'\), column 'modality': 'pet' is not one of"):
        read_case_sheet(write_sheet(tmp_path, bad), CASES_SCHEMA)


def test_missing_column_and_duplicate_case(tmp_path):
    path = tmp_path / "cases.tsv"
    pd.DataFrame([{"case": "a", "image": "a.nii.gz", "label": "b.nii.gz"}]).to_csv(path, sep="\t", index=False)
    with pytest.raises(InputError, match="'modality' is a required property"):
        read_case_sheet(path, CASES_SCHEMA, check_files=False)
    dup = rows(2)
    dup[1]["case"] = dup[0]["case"]
    with pytest.raises(InputError, match="case 'ct000' appears more than once"):
        read_case_sheet(write_sheet(tmp_path, dup), CASES_SCHEMA)


def test_labels_may_be_left_out_only_when_a_model_makes_the_masks(tmp_path):
    path = tmp_path / "cases.tsv"
    (tmp_path / "a.nii.gz").touch()
    pd.DataFrame([{"case": "a", "modality": "mri", "image": "a.nii.gz"}]).to_csv(path, sep="\t", index=False)
    with pytest.raises(InputError, match=r"row 2 \(case 'a'\), column 'label': empty \(a label volume is needed unless "
                                         r"dataset.mask_source is totalvibe\)"):
        read_case_sheet(path, CASES_SCHEMA)
    sheet = read_case_sheet(path, CASES_SCHEMA, labels_required=False)
    assert sheet["label"].tolist() == [""] and sheet["image"].tolist() == [str(tmp_path / "a.nii.gz")]
    missing = write_sheet(tmp_path, rows(1), touch=False)
    (tmp_path / "ct0_img.nii.gz").touch()  # the label file is absent: not looked at
    assert len(read_case_sheet(missing, CASES_SCHEMA, labels_required=False)) == 1


def test_bad_split_value(tmp_path):
    with pytest.raises(InputError, match="column 'split': 'training' is not one of"):
        read_case_sheet(write_sheet(tmp_path, rows(1, split="training")), CASES_SCHEMA)


def test_splits_are_seeded_disjoint_and_per_modality():
    sheet = pd.DataFrame(rows(10) + rows(5, "mri"))
    fractions = {"train": 0.6, "val": 0.2, "test": 0.2}
    a = assign_splits(sheet, fractions, seed=7)
    b = assign_splits(sheet, fractions, seed=7)
    c = assign_splits(sheet, fractions, seed=8)
    pd.testing.assert_frame_equal(a, b)
    assert not a["split"].equals(c["split"])
    counts = a.groupby(["modality", "split"]).size().to_dict()
    assert counts == {("ct", "train"): 6, ("ct", "val"): 2, ("ct", "test"): 2,
                      ("mri", "train"): 3, ("mri", "val"): 1, ("mri", "test"): 1}
    assert a["case"].is_unique  # one split per case: disjoint by construction
    per_split = {s: set(a.loc[a["split"] == s, "case"]) for s in ("train", "val", "test")}
    assert not (per_split["train"] & per_split["val"] or per_split["train"] & per_split["test"] or per_split["val"] & per_split["test"])


def test_explicit_splits_are_kept_and_small_cohorts_get_a_test_case():
    sheet = pd.DataFrame(rows(3, split="") + [{**rows(1, "mri", "test")[0]}])
    sheet.loc[0, "split"] = "val"
    out = assign_splits(sheet, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=1)
    assert out.loc[0, "split"] == "val" and out.loc[3, "split"] == "test"
    assert sorted(out.loc[1:2, "split"]) == ["test", "train"]  # every positive split gets a case


def test_sheet_from_amos_layout(tmp_path):
    meta = {"training": [{"image": "./imagesTr/amos_0001.nii.gz", "label": "./labelsTr/amos_0001.nii.gz"},
                         {"image": "./imagesTr/amos_0540.nii.gz", "label": "./labelsTr/amos_0540.nii.gz"}],
            "validation": [{"image": "./imagesVa/amos_0008.nii.gz", "label": "./labelsVa/amos_0008.nii.gz"}]}
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    sheet = sheet_from_amos(tmp_path)
    assert list(sheet["case"]) == ["amos_0001", "amos_0540", "amos_0008"]
    assert list(sheet["modality"]) == ["ct", "mri", "ct"]
    assert sheet["image"].iloc[2] == str((tmp_path / "imagesVa/amos_0008.nii.gz").resolve())
    with pytest.raises(InputError, match="dataset.json: not found"):
        sheet_from_amos(tmp_path / "elsewhere")


def test_body_column_is_read_and_required_only_for_the_sheet_envelope(tmp_path):
    """``preprocess.body.mode`` sheet: every row names its body mask (relative to the sheet); otherwise the column
    may be absent or empty and is not looked at."""
    path = write_sheet(tmp_path, rows(2))
    assert "body" not in read_case_sheet(path, CASES_SCHEMA).columns  # an old sheet reads as before
    with pytest.raises(InputError, match=r"row 2 \(case 'ct000'\), column 'body': empty \(preprocess.body.mode sheet"):
        read_case_sheet(path, CASES_SCHEMA, body_required=True)
    with_body = [{**row, "body": f"{row['case']}_body.nii.gz"} for row in rows(2)]
    path = write_sheet(tmp_path, with_body)
    assert len(read_case_sheet(path, CASES_SCHEMA)) == 2  # not required: the files are not looked at
    with pytest.raises(InputError, match=r"row 2 \(case 'ct000'\), column 'body': file not found"):
        read_case_sheet(path, CASES_SCHEMA, body_required=True)
    for row in with_body:
        (tmp_path / row["body"]).touch()
    sheet = read_case_sheet(path, CASES_SCHEMA, body_required=True)
    assert sheet["body"].tolist() == [str((tmp_path / f"ct{i:03d}_body.nii.gz").resolve()) for i in range(2)]
    with_body[0]["body"] = "ct000_body.png"
    with pytest.raises(InputError, match=r"column 'body': '.*ct000_body.png' does not match"):
        read_case_sheet(write_sheet(tmp_path, with_body), CASES_SCHEMA, body_required=True)
