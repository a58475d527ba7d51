# Config validation, the case table, input functions and wildcard constraints.

from pathlib import Path

import pandas as pd

from segdiff.sources.casesheet import assign_splits, read_case_sheet, sheet_from_amos, validate_case_sheet
from segdiff.sampling.chunks import largest_chunk, scatter_item
from segdiff.pipeline.config import parse_run, validate_config
from segdiff.sources.download import AMOS_FOLDER
from segdiff.core.errors import ConfigError
from segdiff.core.labels import load_label_map, load_remap
from segdiff.sources.phantom import phantom_cases
from segdiff.data.slicing import slice_views
from segdiff.pipeline.job_params import diffusion_params, preprocess_params, recorded_config, sampling_params, segmentor_params
from segdiff.pipeline.job_memory import cpu_activations_mb, evaluate_mem_mb, sample_mem_mb, slices_bound, train_mem_mb
from segdiff.report.tables import run_label
from segdiff.sources.totalvibe import find_model as find_totalvibe_model

REPO = Path(workflow.basedir)
validate_config(config, REPO / "config/schemas/config.schema.yaml")
if config["sampling"]["sampler"] == "ddpm" and config["sampling"]["steps"] != config["diffusion"]["scheduler"]["num_train_timesteps"]:
    raise ConfigError("sampling.steps", "DDPM steps through every training timestep (MONAI's DDPMScheduler); set it to "
                      "diffusion.scheduler.num_train_timesteps or use sampler ddim with eta 1")

PHANTOM_ROOT = "results/data/phantom"
VIEWS = config["views"]
PRE = config["preprocess"]


def phantom_files(kind):
    """Image or label paths of the phantom cohort the config asks for."""
    p = config["phantom"]
    return [f"{PHANTOM_ROOT}/{c[kind]}" for c in phantom_cases(p["n_ct"], p["n_mri"], p["val_fraction"])]


AMOS = config["dataset"]["source"] == "amos"
AMOS_ROOT = config["dataset"]["amos_root"]
if AMOS and not Path(AMOS_ROOT, "dataset.json").is_file():
    if not AMOS_ROOT or Path(AMOS_ROOT).name != AMOS_FOLDER:
        raise ConfigError("dataset.amos_root", f"{AMOS_ROOT or '(empty)'} holds no dataset.json: point it at your AMOS22 "
                          f"folder, or at a folder named {AMOS_FOLDER} that the workflow downloads AMOS22 into")


def _case_sheet() -> pd.DataFrame | None:
    """The validated case table with a split for every case; None while AMOS22 is not downloaded yet."""
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
        sheet = read_case_sheet(data["sheet"], schema, labels_required=not TOTALVIBE)
    elif not Path(AMOS_ROOT, "dataset.json").is_file():
        return None
    else:
        sheet = validate_case_sheet(sheet_from_amos(AMOS_ROOT), schema, f"{AMOS_ROOT}/dataset.json")
    if TOTALVIBE:
        sheet["label"] = [TOTALVIBE_MASK.format(case=case) for case in sheet["case"]]
    return assign_splits(sheet, data["split"], config["seed"]).set_index("case", drop=False)


# Fail before any job when the label map or remap table is unusable.
LABELS = load_label_map(config["dataset"]["labels"])
if config["dataset"]["remap"]:
    load_remap(config["dataset"]["remap"], LABELS)

#: dataset.mask_source totalvibe: TotalVibeSegmentator's labels of every image replace the sheet's label column
TOTALVIBE = config["dataset"]["mask_source"] == "totalvibe"
TOTALVIBE_MASK = "results/masks/totalvibe/{case}.nii.gz"
if TOTALVIBE:
    find_totalvibe_model()  # weights are never downloaded at run time: no model, no job (one line naming the variable)

CASES = _case_sheet()
# AMOS22 holds both (ids < 500 are CT, the rest MRI): known before the download
MODALITIES = sorted(CASES["modality"].unique()) if CASES is not None else ["ct", "mri"]


def case_table() -> pd.DataFrame:
    """The case table. Before AMOS22 is downloaded, asking for it makes the jobs that need it wait
    for the checkpoint ``amos_download``; Snakemake re-plans once it has run."""
    global CASES
    if CASES is None:
        checkpoints.amos_download.get()
        CASES = _case_sheet()
    return CASES


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
    row = case_table().loc[wildcards.case]
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


def _model_runs():
    """(modality, view) of every diffusion model; checked against the data before any job runs."""
    runs = [parse_run(r)[1:] for r in config["diffusion"]["runs"]]
    for i, (modality, view) in enumerate(runs):
        if modality not in MODALITIES:
            raise ConfigError(f"diffusion.runs.{i}", f"no {modality} case in the dataset")
        missing = sorted(set(slice_views(view)) - set(VIEWS))
        if missing:
            raise ConfigError(f"diffusion.runs.{i}", f"view {view} needs {missing} in 'views'")
    return runs


def _multimodal_runs():
    """(source, target, view) of every multi-modal experiment."""
    runs = []
    for i, spec in enumerate(config["sampling"]["multimodal"]):
        source, target, view = parse_run(spec)
        if (target, view) not in MODEL_RUNS:
            raise ConfigError(f"sampling.multimodal.{i}", f"needs the model {target}/{view} in diffusion.runs")
        if source not in MODALITIES:
            raise ConfigError(f"sampling.multimodal.{i}", f"no {source} case in the dataset")
        runs.append((source, target, view))
    return runs


MODEL_RUNS = _model_runs()
MULTIMODAL_RUNS = _multimodal_runs()


def stores_of(modality, view):
    """Slice stores of the slice views behind a model view."""
    return expand("results/slices/{modality}/{view}/store", modality=modality, view=slice_views(view))


def mask_modality(wildcards):
    """The modality whose test masks a sampling job reads: ``source`` of a multi-modal run, else ``modality``."""
    return wildcards.get("source", None) or wildcards.modality


def run_stores(wildcards):
    """Slice stores a model job reads (wildcards modality or source, view)."""
    return stores_of(mask_modality(wildcards), wildcards.view)


COMPUTE = config["compute"]


def _test_slices(modality, view):
    """Test slices a sampling or evaluation job of this modality x view holds (a bound; before the
    AMOS22 download, AMOS's 500 CT cases stand for either modality)."""
    test_cases = int((cases_of(modality)["split"] == "test").sum()) if CASES is not None else 500
    return slices_bound(config["evaluation"]["max_slices"], test_cases, len(slice_views(view)))


#: first-level width of the networks when they run on the CPU (their activations are host memory); 0 on a GPU
ON_CPU = COMPUTE["gpus"] == 0 and COMPUTE["device"] != "cuda"
CPU_CHANNELS = {"diffusion": config["diffusion"]["model"]["channels"][0] if ON_CPU else 0,
                "segmentor": config["segmentor"]["model"]["channels"][0] if ON_CPU else 0}


#: processes of a training job: one per GPU, data-parallel, when compute.gpus > 1 (as
#: segdiff.core.distributed.job_world_size decides inside the job; the planning node may have no GPU)
TRAIN_PROCESSES = COMPUTE["gpus"] if COMPUTE["gpus"] > 1 and COMPUTE["device"] != "cpu" else 1
#: GPUs of a job that runs on one device (sampling, evaluation): more GPUs mean more chunk jobs side by side
JOB_GPUS = min(COMPUTE["gpus"], 1)
for _key in ("diffusion", "segmentor"):
    if config[_key]["train"]["batch_size"] % TRAIN_PROCESSES:
        raise ConfigError(f"{_key}.train.batch_size", f"{config[_key]['train']['batch_size']} is the global batch of "
                          f"{TRAIN_PROCESSES} data-parallel processes (compute.gpus): make it a multiple of {TRAIN_PROCESSES}")


def train_threads():
    """CPUs of a training job: compute.train_threads for each of its processes."""
    return COMPUTE["train_threads"] * TRAIN_PROCESSES


def train_mem(net, batch_size):
    """Each process of a training job holds its share of the global batch, its loader workers and (on
    the CPU) its activations."""
    local = batch_size // TRAIN_PROCESSES
    return TRAIN_PROCESSES * (
        train_mem_mb(COMPUTE["train_mem_mb"], local, PRE["image_size"], COMPUTE["loader_workers"], COMPUTE["prefetch"])
        + cpu_activations_mb(local, PRE["image_size"], CPU_CHANNELS[net], training=True))


def sample_mem(wildcards):
    """A sampling job holds its chunk of the test subset (wildcard scatteritem i-of-n)."""
    modality = mask_modality(wildcards)
    chunks = scatter_item(wildcards.scatteritem)[1]
    n, k = largest_chunk(_test_slices(modality, wildcards.view), chunks, config["sampling"]["k"], config["sampling"]["batch_size"]), config["sampling"]["k"]
    return sample_mem_mb(COMPUTE["sample_mem_mb"], n, k, PRE["image_size"]) \
        + cpu_activations_mb(min(config["sampling"]["batch_size"], n * k), PRE["image_size"], CPU_CHANNELS["diffusion"], training=False)


GATHER_MEM_MB = 1000  # a gather job's process: numpy, torch imported, matplotlib; no model


def gather_mem(wildcards):
    """A gather job holds the merged generations of the run (and one part while it copies it in)."""
    modality = mask_modality(wildcards)
    return sample_mem_mb(GATHER_MEM_MB, _test_slices(modality, wildcards.view), config["sampling"]["k"], PRE["image_size"])


def evaluate_mem(wildcards):
    source, modality, view = EVALUATION_RUNS[wildcards.run]
    return evaluate_mem_mb(COMPUTE["sample_mem_mb"], _test_slices(source or modality, view), config["sampling"]["k"], PRE["image_size"])


def _evaluation_runs():
    """Evaluation run id -> (source modality or None, target modality, view), in the poster's order."""
    runs = {f"{m}_{v}": (None, m, v) for m, v in MODEL_RUNS}
    runs.update({f"{s}2{t}_{v}": (s, t, v) for s, t, v in MULTIMODAL_RUNS})
    return runs


EVALUATION_RUNS = _evaluation_runs()
RUN_LABELS = {run: run_label(m, v, s) for run, (s, m, v) in EVALUATION_RUNS.items()}


# only the phantom can re-render an anatomy, and only its own labels describe that anatomy
ORACLE = config["dataset"]["source"] == "phantom" and not TOTALVIBE


def oracle_files(source, modality, view):
    """Oracle renders in ``modality``'s contrast of the test anatomy of ``source`` (phantom only)."""
    if not ORACLE:
        return []
    cases = cases_of(source)
    return expand("results/oracle/{contrast}/{view}/{case}.npz", contrast=modality, view=slice_views(view),
                  case=cases[cases["split"] == "test"]["case"])


def evaluation_inputs(wildcards):
    """Generations, segmentor, real test slices of the target modality and oracle renders of one run."""
    run = wildcards.run
    source, modality, view = EVALUATION_RUNS[run]
    return {
        "segmentor": f"results/models/segmentor/{modality}.pt",
        "reference": stores_of(modality, view),
        "generation": f"results/samples/{run}/{'multimodal' if source else 'multi_inference'}.npz",
        "oracle": oracle_files(source or modality, modality, view),
    }


def generations_panel_inputs():
    """Reconstruction and multi-inference of the first model run, and the first multi-modal run."""
    if not MODEL_RUNS:
        return []
    modality, view = MODEL_RUNS[0]
    files = [f"results/samples/{modality}_{view}/reconstruction.npz", f"results/samples/{modality}_{view}/multi_inference.npz"]
    files += [f"results/samples/{s}2{t}_{v}/multimodal.npz" for s, t, v in MULTIMODAL_RUNS[:1]]
    return files


def checkpoint_pairs():
    """(training checkpoint, model file) of every model of the study."""
    pairs = [(f"checkpoints/diffusion/{m}_{v}.ckpt", f"results/models/diffusion/{m}_{v}.pt") for m, v in MODEL_RUNS]
    return pairs + [(f"checkpoints/segmentor/{m}.ckpt", f"results/models/segmentor/{m}.pt") for m in sorted({m for m, _ in MODEL_RUNS})]


def loss_logs():
    return [f"results/models/diffusion/{m}_{v}_loss.csv" for m, v in MODEL_RUNS] + expand(
        "results/models/segmentor/{modality}_loss.csv", modality=sorted({m for m, _ in MODEL_RUNS})
    )


#: modality -> the evaluation run (its first model) shown in the oracle-vs-generated figure
ORACLE_FIGURE_RUNS = {m: f"{m}_{v}" for m, v in reversed(MODEL_RUNS)} if ORACLE else {}


def evaluation_outputs():
    if not MODEL_RUNS:
        return []
    return [
        "results/table.csv",
        "results/figures/generations.png",
        *expand("results/evaluation/{run}/metrics.json", run=RUN_LABELS),
        *expand("results/figures/oracle_vs_generated_{modality}.png", modality=sorted(ORACLE_FIGURE_RUNS)),
    ]


def diffusion_outputs():
    out = []
    for modality, view in MODEL_RUNS:
        run = f"{modality}_{view}"
        out += [f"results/models/diffusion/{run}.pt", f"results/figures/loss/diffusion_{run}.png"]
        out += expand("results/samples/{run}/{mode}.npz", run=run, mode=["reconstruction", "multi_inference"])
    out += [f"results/samples/{s}2{t}_{v}/multimodal.npz" for s, t, v in MULTIMODAL_RUNS]
    return out


def all_outputs():
    return [
        "results/data/cases.tsv",
        *all_manifests(),
        "results/figures/slices_preview.png",
        *diffusion_outputs(),
        *evaluation_outputs(),
        "results/provenance.json",
    ]
