# Config validation, the case table, input functions and wildcard constraints.

from pathlib import Path

import pandas as pd

from segdiff.casesheet import assign_splits, read_case_sheet, sheet_from_amos, validate_case_sheet
from segdiff.config import validate_config
from segdiff.labels import load_label_map, load_remap
from segdiff.phantom import phantom_cases

REPO = Path(workflow.basedir)
validate_config(config, REPO / "config/schemas/config.schema.yaml")

PHANTOM_ROOT = "results/data/phantom"
VIEWS = config["views"]
PRE = config["preprocess"]


def phantom_files(kind):
    """Image or label paths of the phantom cohort the config asks for."""
    p = config["phantom"]
    return [f"{PHANTOM_ROOT}/{c[kind]}" for c in phantom_cases(p["n_ct"], p["n_mri"], p["val_fraction"])]


def _case_sheet() -> pd.DataFrame:
    """The validated case table with a split for every case (read once, at parse time)."""
    data = config["dataset"]
    schema = REPO / "config/schemas/cases.schema.yaml"
    if data["source"] == "phantom":
        p = config["phantom"]
        rows = [
            {"case": c["case"], "modality": c["modality"], "split": "",
             "image": f"{PHANTOM_ROOT}/{c['image']}", "label": f"{PHANTOM_ROOT}/{c['label']}"}
            for c in phantom_cases(p["n_ct"], p["n_mri"], p["val_fraction"])
        ]
        sheet = validate_case_sheet(pd.DataFrame(rows), schema, "phantom plan", check_files=False)
    elif data["source"] == "sheet":
        sheet = read_case_sheet(data["sheet"], schema)
    else:
        sheet = validate_case_sheet(sheet_from_amos(data["amos_root"]), schema, f"{data['amos_root']}/dataset.json")
    return assign_splits(sheet, data["split"], config["seed"]).set_index("case", drop=False)


# Fail before any job when the label map or remap table is unusable.
LABELS = load_label_map(config["dataset"]["labels"])
if config["dataset"]["remap"]:
    load_remap(config["dataset"]["remap"], LABELS)

CASES = _case_sheet()
MODALITIES = sorted(CASES["modality"].unique())


wildcard_constraints:
    modality="ct|mri",
    view="axial|coronal|sagittal",
    case="[A-Za-z0-9][A-Za-z0-9._-]*",


def cases_of(modality):
    return CASES[CASES["modality"] == modality]


def case_input(wildcards):
    row = CASES.loc[wildcards.case]
    return {"image": row["image"], "label": row["label"]}


def shards_of(wildcards):
    return expand(
        "results/slices/{modality}/{view}/{case}.npz",
        modality=wildcards.modality,
        view=wildcards.view,
        case=cases_of(wildcards.modality)["case"],
    )


def manifest_rows(wildcards):
    return cases_of(wildcards.modality)[["case", "modality", "split"]].to_dict("records")


def all_manifests():
    return expand("results/slices/{modality}/{view}/manifest.tsv", modality=MODALITIES, view=VIEWS)


def all_outputs():
    return [
        "results/data/cases.tsv",
        *all_manifests(),
        "results/figures/slices_preview.png",
        "results/provenance.json",
    ]
