"""The run planning of the workflow (segdiff.pipeline.plan), without Snakemake: runs, targets, requests.

The memory requests asserted here are those `snakemake -n` planned for the same configs before the
planning moved out of workflow/rules/common.smk.
"""

from __future__ import annotations

import copy
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from conftest import REPO

from segdiff.core.errors import ConfigError
from segdiff.pipeline.config import validate_config
from segdiff.pipeline.plan import StudyPlan
from segdiff.sources.casesheet import assign_splits
from segdiff.sources.phantom import phantom_cases

SCHEMA = REPO / "config/schemas/config.schema.yaml"
DEFAULT = yaml.safe_load((REPO / "config/config.yaml").read_text())
SLURM_COMPUTE = yaml.safe_load((REPO / "slurm/compute.yaml").read_text())["compute"]
DEFAULT_RUNS = ["ct_axial", "ct_all", "mri_axial", "mri_all", "ct2mri_axial"]


def _merged(base: dict, change: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in change.items():
        out[key] = _merged(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def config_of(change: dict | None = None, base: dict | None = None) -> dict:
    """The default config (or ``base``) with ``change`` merged in, validated (defaults filled)."""
    return validate_config(_merged(DEFAULT if base is None else base, change or {}), SCHEMA)


def phantom_table(config: dict) -> pd.DataFrame:
    """The phantom's case table as the workflow builds it (seeded splits per modality)."""
    p = config["phantom"]
    rows = [(c["case"], c["modality"], "") for c in phantom_cases(p["n_ct"], p["n_mri"], p["val_fraction"])]
    sheet = pd.DataFrame(rows, columns=["case", "modality", "split"])
    return assign_splits(sheet, config["dataset"]["split"], config["seed"]).set_index("case", drop=False)


def sheet_table(splits: dict[str, str]) -> pd.DataFrame:
    """A CT-only case sheet: case -> split."""
    return pd.DataFrame({"case": list(splits), "modality": "ct", "split": list(splits.values())})


def plan_of(change: dict | None = None, cases: pd.DataFrame | None | str = "phantom", base: dict | None = None) -> StudyPlan:
    config = config_of(change, base)
    return StudyPlan(config, phantom_table(config) if isinstance(cases, str) else cases)


@pytest.fixture(scope="module")
def default():
    return plan_of()


def test_default_runs_labels_and_modalities(default):
    assert default.modalities == ["ct", "mri"] and default.views == ["axial", "coronal", "sagittal"]
    assert default.model_runs == [("ct", "axial"), ("ct", "all"), ("mri", "axial"), ("mri", "all")]
    assert default.multimodal_runs == [("ct", "mri", "axial")]
    assert list(default.evaluation_runs) == DEFAULT_RUNS  # the poster's column order
    assert default.evaluation_runs["ct2mri_axial"] == ("ct", "mri", "axial")
    assert default.evaluation_runs["mri_all"] == (None, "mri", "all")
    assert default.run_labels == {"ct_axial": "CT axial", "ct_all": "CT", "mri_axial": "MRI axial", "mri_all": "MRI",
                                  "ct2mri_axial": "CT→MRI axial"}
    assert default.segmentor_modalities() == ["ct", "mri"]


def test_default_targets(default):
    targets = default.all_outputs()
    assert len(targets) == len(set(targets)) == 35
    assert targets[0] == "results/data/cases.tsv" and targets[-1] == "results/provenance.json"
    assert targets[1:7] == [f"results/slices/{m}/{v}/manifest.tsv" for m in ("ct", "mri")
                            for v in ("axial", "coronal", "sagittal")]
    assert default.diffusion_outputs()[:4] == ["results/models/diffusion/ct_axial.pt", "results/figures/loss/diffusion_ct_axial.png",
                                               "results/samples/ct_axial/reconstruction.npz",
                                               "results/samples/ct_axial/multi_inference.npz"]
    assert default.diffusion_outputs()[-1] == "results/samples/ct2mri_axial/multimodal.npz"
    assert default.metrics_files() == [f"results/evaluation/{run}/metrics.json" for run in DEFAULT_RUNS]
    assert default.evaluation_outputs()[-2:] == ["results/figures/oracle_vs_generated_ct.png",
                                                 "results/figures/oracle_vs_generated_mri.png"]
    assert default.generations_panel_inputs() == ["results/samples/ct_axial/reconstruction.npz",
                                                  "results/samples/ct_axial/multi_inference.npz",
                                                  "results/samples/ct2mri_axial/multimodal.npz"]
    assert default.checkpoint_pairs()[1] == ("checkpoints/diffusion/ct_all.ckpt", "results/models/diffusion/ct_all.pt")
    assert default.checkpoint_pairs()[5] == ("checkpoints/segmentor/mri.ckpt", "results/models/segmentor/mri.pt")
    assert default.checkpoint_pairs()[-1] == ("checkpoints/usefulness/mri_oracle.ckpt", "results/usefulness/mri/segmentor_oracle.pt")
    assert len(default.checkpoint_pairs()) == 6 + 2 * 5  # + the usefulness segmentors
    assert default.loss_logs() == ["results/models/diffusion/ct_axial_loss.csv", "results/models/diffusion/ct_all_loss.csv",
                                   "results/models/diffusion/mri_axial_loss.csv", "results/models/diffusion/mri_all_loss.csv",
                                   "results/models/segmentor/ct_loss.csv", "results/models/segmentor/mri_loss.csv"]


def test_view_all_reads_the_three_slice_stores(default):
    assert default.stores("ct", "all") == [f"results/slices/ct/{v}/store" for v in ("axial", "coronal", "sagittal")]
    assert default.stores("mri", "coronal") == ["results/slices/mri/coronal/store"]
    inputs = default.evaluation_inputs("mri_all")
    assert inputs["reference"] == default.stores("mri", "all")
    assert inputs["generation"] == "results/samples/mri_all/multi_inference.npz"
    assert inputs["segmentor"] == "results/models/segmentor/mri.pt"


def test_view_all_needs_the_three_views():
    with pytest.raises(ConfigError, match=r"diffusion\.runs\.0.*view all needs \['coronal', 'sagittal'\] in 'views'"):
        plan_of({"views": ["axial"], "diffusion": {"runs": ["ct/all"]}, "sampling": {"multimodal": []}})


def test_multimodal_runs_need_their_model_and_source_cases():
    with pytest.raises(ConfigError, match=r"sampling\.multimodal\.0.*needs the model mri/coronal in diffusion\.runs"):
        plan_of({"sampling": {"multimodal": ["ct>mri/coronal"]}})
    ct_only = sheet_table({"a": "train", "b": "val", "c": "test"})
    with pytest.raises(ConfigError, match=r"diffusion\.runs\.2.*no mri case in the dataset"):
        plan_of({"sampling": {"multimodal": []}}, cases=ct_only)
    with pytest.raises(ConfigError, match=r"sampling\.multimodal\.0.*no mri case in the dataset"):
        plan_of({"diffusion": {"runs": ["ct/axial"]}, "sampling": {"multimodal": ["mri>ct/axial"]}}, cases=ct_only)
    plan = plan_of({"diffusion": {"runs": ["mri/coronal", "ct/axial"]}, "sampling": {"multimodal": ["ct>mri/coronal"]}})
    assert list(plan.run_labels.items())[-1] == ("ct2mri_coronal", "CT→MRI coronal")
    assert plan.evaluation_inputs("ct2mri_coronal")["generation"] == "results/samples/ct2mri_coronal/multimodal.npz"
    assert plan.generations_panel_inputs()[-1] == "results/samples/ct2mri_coronal/multimodal.npz"
    assert plan.oracle_figure_runs == {"ct": "ct_axial", "mri": "mri_coronal"}


def test_oracle_renders_only_for_the_phantom_with_its_own_labels(default):
    assert default.oracle and default.oracle_figure_runs == {"ct": "ct_axial", "mri": "mri_axial"}
    ct_test = sorted(default.cases.query("modality == 'ct' and split == 'test'")["case"])
    assert len(ct_test) == 5  # 24 cases, test fraction 0.2
    # CT->MRI: MRI renders of the CT test anatomy, one file per slice view and test case
    oracle = default.evaluation_inputs("ct2mri_axial")["oracle"]
    assert sorted(oracle) == [f"results/oracle/mri/axial/{case}.npz" for case in ct_test]
    assert len(default.oracle_files("mri", "mri", "all")) == 15
    sheet = plan_of({"dataset": {"source": "sheet", "sheet": "cases.tsv"}, "diffusion": {"runs": ["ct/axial"]},
                     "sampling": {"multimodal": []}}, cases=sheet_table({"a": "train", "b": "val", "c": "test"}))
    assert not sheet.oracle and sheet.oracle_figure_runs == {}
    assert sheet.evaluation_inputs("ct_axial")["oracle"] == []
    assert not any("oracle" in target for target in sheet.all_outputs())
    totalvibe = plan_of({"dataset": {"mask_source": "totalvibe"}})
    assert not totalvibe.oracle and totalvibe.oracle_files("ct", "mri", "axial") == []


def test_no_model_run_plans_the_data_only():
    plan = plan_of({"diffusion": {"runs": []}, "sampling": {"multimodal": []}})
    assert plan.evaluation_runs == {} and plan.generations_panel_inputs() == [] and plan.checkpoint_pairs() == []
    assert plan.evaluation_outputs() == [] and plan.diffusion_outputs() == []
    assert plan.all_outputs() == ["results/data/cases.tsv", *plan.manifests(), "results/figures/slices_preview.png",
                                  "results/provenance.json"]


def test_requests_of_the_default_study_on_the_cpu(default):
    # no GPU: one process per training job, and the networks' activations are host memory
    assert (default.train_processes, default.train_threads, default.job_gpus) == (1, 1, 0)
    assert default.cpu_channels == {"diffusion": 16, "segmentor": 16}
    assert default.train_mem("diffusion") == 4339 and default.train_mem("segmentor") == 4678
    assert default.sample_mem("ct", "axial", "1-of-1") == default.sample_mem("mri", "all", "1-of-1") == 2147
    assert default.gather_mem("ct", "all") == 1003
    assert {run: default.evaluate_mem(run) for run in DEFAULT_RUNS} == dict.fromkeys(DEFAULT_RUNS, 2006)
    chunked = plan_of({"compute": {"device": "cpu", "train_threads": 2}, "sampling": {"chunks": 3}})
    assert chunked.train_threads == 2 and chunked.sample_mem("mri", "axial", "2-of-3") == 2145  # a third of the subset


def test_requests_on_gpus():
    slurm = plan_of({"compute": SLURM_COMPUTE})  # slurm/compute.yaml over the default config
    assert (slurm.train_processes, slurm.train_threads, slurm.job_gpus) == (1, 8, 1)
    assert slurm.cpu_channels == {"diffusion": 0, "segmentor": 0}  # activations live in GPU memory
    assert slurm.train_mem("diffusion") == 19212 and slurm.train_mem("segmentor") == 19224
    assert slurm.sample_mem("ct", "axial", "1-of-1") == 2003 and slurm.evaluate_mem("ct_all") == 2006
    # two GPUs: two data-parallel processes per training job, each with its threads, share of the batch and loader
    two = plan_of({"compute": {**SLURM_COMPUTE, "gpus": 2}})
    assert (two.train_processes, two.train_threads, two.job_gpus) == (2, 16, 1)
    assert two.train_mem("diffusion") == 38412 and two.train_mem("segmentor") == 38424
    # device cpu never trains data-parallel, whatever compute.gpus says
    assert plan_of({"compute": {"device": "cpu", "gpus": 2}}).train_processes == 1
    with pytest.raises(ConfigError, match=r"diffusion\.train\.batch_size.*global batch of 3 data-parallel processes"):
        plan_of({"compute": {**SLURM_COMPUTE, "gpus": 3}})


def test_requests_follow_the_test_set_without_max_slices():
    # 2 test cases of 3 slice views, at most 512 slices each: the bound of a whole test set
    cases = sheet_table({"c1": "train", "c2": "train", "c3": "train", "c4": "val", "c5": "test", "c6": "test"})
    plan = plan_of({"dataset": {"source": "sheet", "sheet": "cases.tsv"}, "diffusion": {"runs": ["ct/axial", "ct/all"]},
                    "sampling": {"multimodal": [], "chunks": 2}, "evaluation": {"max_slices": 0}}, cases=cases)
    assert plan.test_slices("ct", "axial") == 1024 and plan.test_slices("ct", "all") == 3072
    assert plan.sample_mem("ct", "axial", "1-of-2") == 2191 and plan.sample_mem("ct", "all", "2-of-2") == 2286
    assert plan.gather_mem("ct", "axial") == 1095 and plan.gather_mem("ct", "all") == 1284
    assert plan.evaluate_mem("ct_axial") == 2207 and plan.evaluate_mem("ct_all") == 2621


def test_amos_before_its_download():
    """Before AMOS22 is downloaded there is no case table: both modalities, and 500 test cases as the bound."""
    amos = yaml.safe_load((REPO / "config/amos.yaml").read_text())
    plan = plan_of(cases=None, base=amos)
    assert plan.cases is None and plan.modalities == ["ct", "mri"] and not plan.oracle
    assert list(plan.run_labels) == DEFAULT_RUNS
    assert plan.test_slices("mri", "all") == 1024  # evaluation.max_slices
    assert plan.sample_mem("ct", "all", "3-of-8") == 8336 and plan.gather_mem("mri", "axial") == 3688
    assert plan.evaluate_mem("ct2mri_axial") == 13888
    unbounded = plan_of({"evaluation": {"max_slices": 0}}, cases=None, base=amos)
    assert unbounded.test_slices("ct", "all") == 500 * 3 * 512
    unbounded.cases = sheet_table({"amos_0001": "train", "amos_0002": "test"})  # the workflow's, after the download
    assert unbounded.test_slices("ct", "all") == 3 * 512 and unbounded.test_slices("mri", "axial") == 0


def test_the_plan_does_not_import_snakemake():
    code = "import sys, segdiff.pipeline.plan; sys.exit('snakemake' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_usefulness_plan_sets_stores_few_real_cases_and_generators():
    plan = plan_of()
    assert plan.usefulness_sets == ["real", "generated", "real_generated", "few_real", "few_real_generated", "oracle"]
    assert plan.usefulness_modalities == ["ct", "mri"]
    assert plan.generator_model("ct", "axial") == "results/models/diffusion/ct_axial.pt"  # the view's own model
    assert plan.generator_model("ct", "coronal") == "results/models/diffusion/ct_all.pt"  # else all views
    real = [f"results/slices/ct/{v}/store" for v in ("axial", "coronal", "sagittal")]
    generated = [f"results/usefulness/ct/generated/{v}/1-of-1" for v in ("axial", "coronal", "sagittal")]
    assert plan.usefulness_stores("ct", "generated") == generated
    assert plan.usefulness_stores("ct", "real_generated") == real + generated
    few = plan.few_real("ct")
    train_val = plan.cases[(plan.cases.modality == "ct") & plan.cases.split.isin(["train", "val"])]["case"]
    assert len(few) == 5 and set(few) <= set(train_val)  # ceil(0.25 x 19)
    assert plan.usefulness_cases("ct", "few_real_generated") == [few] * 3 + [None] * 3
    assert plan.usefulness_cases("ct", "few_real") == [few] * 3 and plan.usefulness_stores("ct", "few_real") == real
    assert plan.usefulness_cases("ct", "generated") is None
    assert plan.usefulness_segmentor("mri", "real") == "results/models/segmentor/mri.pt"
    assert "results/usefulness/table.csv" not in plan.all_outputs()  # a named target by default
    assert "results/usefulness/table.csv" in plan_of({"usefulness": {"in_all": True}}).all_outputs()
    chunked = plan_of({"sampling": {"chunks": 2}})
    assert chunked.usefulness_stores("mri", "generated")[:2] == [f"results/usefulness/mri/generated/axial/{i}-of-2" for i in (1, 2)]
    assert ("checkpoints/usefulness/ct_generated.ckpt", "results/usefulness/ct/segmentor_generated.pt") in plan.checkpoint_pairs()


def test_usefulness_without_a_generator_or_an_oracle():
    only_axial = {"diffusion": {"runs": ["ct/axial", "mri/axial"]}, "sampling": {"multimodal": []}}
    plan = plan_of(only_axial)
    assert plan.usefulness_modalities == [] and plan.usefulness_outputs() == []
    with pytest.raises(ConfigError, match="usefulness.in_all.*every view"):
        plan_of({**only_axial, "usefulness": {"in_all": True}})
    with pytest.raises(ConfigError, match="ct model of view coronal or all"):
        plan.generator_model("ct", "coronal")
    sheet = plan_of({"dataset": {"source": "sheet", "sheet": "cases.tsv"}, "diffusion": {"runs": ["ct/all"]},
                     "sampling": {"multimodal": []}}, cases=sheet_table({"a": "train", "b": "val", "c": "test"}))
    assert "oracle" not in sheet.usefulness_sets and any("phantom" in n for n in sheet.usefulness_notes())
