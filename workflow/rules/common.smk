# Config validation, the case table, input functions and wildcard constraints.
# Run planning (targets, runs, threads and memory requests) is segdiff.pipeline.plan: PLAN below.

from pathlib import Path

import pandas as pd

from segdiff.core.errors import ConfigError
from segdiff.core.labels import load_label_map, load_remap
from segdiff.pipeline.config import check_body, validate_config
from segdiff.pipeline.job_params import diffusion_params, preprocess_params, recorded_config  # params of the rules
from segdiff.pipeline.job_params import sampling_params, segmentor_params, trainset_params
from segdiff.pipeline.plan import StudyPlan
from segdiff.sources.casesheet import assign_splits, read_case_sheet, sheet_from_amos, validate_case_sheet
from segdiff.sources.download import AMOS_FOLDER
from segdiff.sources.phantom import phantom_cases
from segdiff.sources.totalvibe import find_model as find_totalvibe_model

REPO = Path(workflow.basedir)
validate_config(config, REPO / "config/schemas/config.schema.yaml")
if (
    config["sampling"]["sampler"] == "ddpm"
    and config["sampling"]["steps"] != config["diffusion"]["scheduler"]["num_train_timesteps"]
):
    raise ConfigError(
        "sampling.steps",
        "DDPM steps through every training timestep (MONAI's DDPMScheduler); set it to "
        "diffusion.scheduler.num_train_timesteps or use sampler ddim with eta 1",
    )

PHANTOM_ROOT = "results/data/phantom"
VIEWS = config["views"]
AMOS = config["dataset"]["source"] == "amos"
AMOS_ROOT = config["dataset"]["amos_root"]
if AMOS and not Path(AMOS_ROOT, "dataset.json").is_file():
    if not AMOS_ROOT or Path(AMOS_ROOT).name != AMOS_FOLDER:
        raise ConfigError(
            "dataset.amos_root",
            f"{AMOS_ROOT or '(empty)'} holds no dataset.json: point it at your AMOS22 "
            f"folder, or at a folder named {AMOS_FOLDER} that the workflow downloads AMOS22 into",
        )

# Fail before any job when the label map or remap table is unusable.
LABELS = load_label_map(config["dataset"]["labels"])
if config["dataset"]["remap"]:
    load_remap(config["dataset"]["remap"], LABELS)

#: preprocess.body: the masks carry the body envelope (id LABELS.body_id); mode sheet reads the sheet's column body
BODY = config["preprocess"]["body"]["mode"]
check_body(config, LABELS)

#: dataset.mask_source totalvibe: TotalVibeSegmentator's labels of every image replace the sheet's label column
TOTALVIBE = config["dataset"]["mask_source"] == "totalvibe"
TOTALVIBE_MASK = "results/masks/totalvibe/{case}.nii.gz"
if TOTALVIBE:
    find_totalvibe_model()  # weights are never downloaded at run time: no model, no job (one line naming the variable)


#: the phantom cohort the config asks for (case ids are deterministic: no checkpoint needed)
PHANTOM_CASES = phantom_cases(config["phantom"]["n_ct"], config["phantom"]["n_mri"], config["phantom"]["val_fraction"])


def phantom_files(kind):
    """Image or label paths of the phantom cohort."""
    return [f"{PHANTOM_ROOT}/{c[kind]}" for c in PHANTOM_CASES]


def _case_sheet() -> pd.DataFrame | None:
    """The validated case table with a split for every case; None while AMOS22 is not downloaded yet."""
    data = config["dataset"]
    schema = REPO / "config/schemas/cases.schema.yaml"
    if data["source"] == "phantom":
        root = f"{PHANTOM_ROOT}/"
        rows = [(c["case"], c["modality"], "", root + c["image"], root + c["label"]) for c in PHANTOM_CASES]
        rows = pd.DataFrame(rows, columns=["case", "modality", "split", "image", "label"])
        sheet = validate_case_sheet(rows, schema, "phantom plan", check_files=False)
    elif data["source"] == "sheet":
        sheet = read_case_sheet(data["sheet"], schema, labels_required=not TOTALVIBE, body_required=BODY == "sheet")
    elif not Path(AMOS_ROOT, "dataset.json").is_file():
        return None
    else:
        sheet = validate_case_sheet(sheet_from_amos(AMOS_ROOT), schema, f"{AMOS_ROOT}/dataset.json")
    if TOTALVIBE:
        sheet["label"] = [TOTALVIBE_MASK.format(case=case) for case in sheet["case"]]
    return assign_splits(sheet, data["split"], config["seed"]).set_index("case", drop=False)


#: the study's runs, targets and resource requests (runs checked against the data before any job)
PLAN = StudyPlan(config, _case_sheet())


def case_table() -> pd.DataFrame:
    """The case table. Before AMOS22 is downloaded, asking for it makes the jobs that need it wait
    for the checkpoint ``amos_download``; Snakemake re-plans once it has run."""
    if PLAN.cases is None:
        checkpoints.amos_download.get()
        PLAN.cases = _case_sheet()
    return PLAN.cases


def amos_data(wildcards):
    """The AMOS22 folder (the checkpoint's output) for source amos; nothing otherwise."""
    return checkpoints.amos_download.get().output if AMOS else []


wildcard_constraints:
    modality="ct|mri",
    source="ct|mri",
    contrast="ct|mri",
    view="axial|coronal|sagittal|all",
    run="[a-z0-9_]+",
    case="[A-Za-z0-9][A-Za-z0-9._-]*",


def cases_of(modality):
    cases = case_table()
    return cases[cases["modality"] == modality]


def case_input(wildcards):
    """A case's volumes: image, label (and its body mask in preprocess.body mode sheet)."""
    row = case_table().loc[wildcards.case]
    return {"image": row["image"], "label": row["label"], **({"body": row["body"]} if BODY == "sheet" else {})}


def oracle_input(wildcards):
    """An oracle job's case files: its label (and its own image, which its body envelope is derived from)."""
    row = case_table().loc[wildcards.case]
    return {"label": row["label"], **({"image": row["image"]} if BODY != "off" else {})}


def oracle_preprocess(wildcards):
    """An oracle job's preprocess params: its contrast's, with the body envelope of the case's own modality."""
    return preprocess_params(config, wildcards.contrast, body_modality=case_table().loc[wildcards.case, "modality"])


#: params of a diffusion model that the body envelope adds (one more mask channel); none while it is off
BODY_PARAMS = {"body": True} if BODY != "off" else {}


def shard_outputs():
    """A case's shards, one per view: temp() unless ``preprocess.keep_shards`` (the stores hold the same slices)."""
    shards = expand("results/slices/{{modality}}/{view}/{{case}}.npz", view=VIEWS)
    return shards if config["preprocess"]["keep_shards"] else temp(shards)


def shards_of(wildcards):
    return expand(
        "results/slices/{modality}/{view}/{case}.npz",
        modality=wildcards.modality,
        view=wildcards.view,
        case=cases_of(wildcards.modality)["case"],
    )


def manifest_rows(wildcards):
    return cases_of(wildcards.modality)[["case", "modality", "split"]].to_dict("records")


def mask_modality(wildcards):
    """The modality whose test masks a sampling job reads: ``source`` of a multi-modal run, else ``modality``."""
    return wildcards.get("source", None) or wildcards.modality


def run_stores(wildcards):
    """Slice stores a model job reads (wildcards modality or source, view)."""
    return PLAN.stores(mask_modality(wildcards), wildcards.view)


def evaluation_inputs(wildcards):
    """Generations, segmentor, real test slices of the target modality and oracle renders of one run."""
    return PLAN.evaluation_inputs(wildcards.run)


def usefulness_cases(wildcards):
    """Per store of a usefulness segmentor, the cases it learns from (the few real cases; None: all)."""
    case_table()
    return PLAN.usefulness_cases(wildcards.modality, wildcards.trainset)


def usefulness_label_files(wildcards):
    """Case -> label volume of a modality's cases in ``segmentor.splits`` (the oracle training set's anatomy)."""
    cases = cases_of(wildcards.modality)
    cases = cases[cases["split"].isin(config["segmentor"]["splits"])]
    return dict(zip(cases["case"], cases["label"]))
