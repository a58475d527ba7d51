"""The job settings objects built from a job's ``snakemake`` object: what shapes the outputs comes from the
rule's params, speed and placement from the config; the machine-dependent settings are decided once."""

from __future__ import annotations

import ast
import copy
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import CONFIG_SCHEMA, REPO

from segdiff.core.device import use_bf16
from segdiff.core.labels import load_label_map, load_remap
from segdiff.data.body import BodySettings
from segdiff.data.jobs import SliceCaseJob
from segdiff.data.loader import LoaderSettings
from segdiff.data.oracle import OracleJob
from segdiff.evaluation.run import EvaluationJob
from segdiff.models.diffusion import DenoiserConfig, SchedulerConfig
from segdiff.models.jobs import DiffusionTrainJob, SegmentorTrainJob
from segdiff.models.segmentor import SegmentorConfig
from segdiff.models.training import TrainSettings
from segdiff.pipeline import jobs
from segdiff.pipeline.config import load_config
from segdiff.pipeline.job_params import diffusion_params, preprocess_params, sampling_params, segmentor_params
from segdiff.evaluation.figures import LOSS_PANELS, EvaluationFiguresJob, loss_panels
from segdiff.sampling.experiments import SampleJob
from segdiff.sampling.files import GatherJob
from segdiff.sampling.samplers import SamplerSettings

CPU = torch.device("cpu")
AMOS15 = load_label_map("amos15")


@pytest.fixture
def config():
    """The default config, with speed settings unlike their defaults (and the job on the CPU in fp32)."""
    config = load_config(REPO / "config/config.yaml", CONFIG_SCHEMA)
    config["compute"].update(device="cpu", precision="fp32", loader_workers=3, prefetch=5)
    config["sampling"].update(batch_size=7, chunks=3)
    config["diffusion"]["train"].update(checkpoint_every=17, compile=True)
    config["segmentor"]["train"].update(checkpoint_every=19, compile=False)
    return config


def stand_in(config, params, input=None, output=None, wildcards=None):
    """What Snakemake hands a ``script:`` job, with plain attributes for its named lists."""
    return SimpleNamespace(params=SimpleNamespace(**params), input=SimpleNamespace(**(input or {})),
                           output=SimpleNamespace(**(output or {})), wildcards=SimpleNamespace(**(wildcards or {})),
                           config=config, threads=1, log=[])


def test_sample_job_takes_the_sampler_from_params_and_the_batch_from_the_config(config):
    config["sampling"]["sampler"] = "dpmpp_2m_sde"
    sampling = sampling_params(config)
    sampling["steps"] = 3  # the rule's params, not the config, shape the generations
    smk = stand_in(config, {"sampling": sampling, "max_slices": 32, "seed": 1234, "mode": "multimodal"},
                   input={"model": "results/models/diffusion/mri_axial.pt", "stores": ["results/slices/ct/axial/store"]},
                   output={"part": "results/samples/ct2mri_axial/chunks/multimodal_2-of-3.npz"},
                   wildcards={"source": "ct", "modality": "mri", "view": "axial", "scatteritem": "2-of-3"})
    assert "eta" not in sampling  # DDIM's: absent from a DPM-Solver++ run's params
    job = jobs.sample_job(smk)
    assert job == SampleJob(model="results/models/diffusion/mri_axial.pt", stores=("results/slices/ct/axial/store",),
                            mode="multimodal", sampler=SamplerSettings(sampler="dpmpp_2m_sde", steps=3, spacing="lambda",
                                                                       batch_size=7, bf16=False),
                            k=4, max_slices=32, seed=1234, device=CPU,
                            out="results/samples/ct2mri_axial/chunks/multimodal_2-of-3.npz", chunk=1, chunks=3,
                            source="ct")
    # a multi-modal rule's min_foreground drops the source slices left (nearly) empty
    smk.params.min_foreground = 4
    assert jobs.sample_job(smk).min_foreground == 4
    # the number of chunks is the scatter item's (--set-scatter), not the config's
    smk.wildcards.scatteritem = "1-of-5"
    assert (jobs.sample_job(smk).chunk, jobs.sample_job(smk).chunks) == (0, 5)
    config["compute"]["precision"] = "bf16"
    assert jobs.sample_job(smk).sampler.bf16 is True


def test_sampler_settings_decide_bf16_for_the_device():
    sampling = {"sampler": "ddpm", "steps": 0, "eta": 0.0, "batch_size": 5, "k": 2}
    for precision in ("auto", "bf16", "fp32"):
        settings = jobs.sampler_settings(sampling, precision, CPU)
        assert settings == SamplerSettings("ddpm", 0, 0.0, 5, bf16=use_bf16(precision, CPU))
        assert settings.bf16 is not None
    with pytest.raises(ValueError, match="precision"):
        jobs.sampler_settings(sampling, "fp16", CPU)


def test_gather_job_of_a_multi_inference_and_of_a_multimodal_run(config):
    out = {"samples": "s/multi_inference.npz", "grid": "s/multi_inference.png", "reconstruction": "s/reconstruction.npz",
           "reconstruction_grid": "s/reconstruction.png"}
    smk = stand_in(config, {"labels": "amos15"}, input={"parts": ["p1.npz", "p2.npz"]}, output=out,
                   wildcards={"modality": "ct", "view": "all"})
    assert jobs.gather_job(smk) == GatherJob(parts=("p1.npz", "p2.npz"), labels=AMOS15, out="s/multi_inference.npz",
                                             grid="s/multi_inference.png", reconstruction="s/reconstruction.npz",
                                             reconstruction_grid="s/reconstruction.png", title="ct masks -> ct model (all)")
    smk = stand_in(config, {"labels": "amos15"}, input={"parts": ["p1.npz"]},
                   output={"samples": "m/multimodal.npz", "grid": "m/multimodal.png"},
                   wildcards={"source": "ct", "modality": "mri", "view": "axial"})
    job = jobs.gather_job(smk)
    assert (job.reconstruction, job.reconstruction_grid) == (None, None)
    assert job.title == "ct masks -> mri model (axial)" and job.parts == ("p1.npz",)


def test_evaluation_job(config):
    params = {"label": "CT axial", "labels": "amos15", "inception_weights": "fid.pth", "poster_inception_weights": "",
              "max_slices": 32, "seed": 1234}
    inputs = {"generation": "results/samples/ct_axial/multi_inference.npz", "segmentor": "results/models/segmentor/ct.pt",
              "reference": ["results/slices/ct/axial/store"], "oracle": ["results/oracle/ct/axial/amos_0001.npz"]}
    smk = stand_in(config, params, input=inputs, output={"metrics": "results/evaluation/ct_axial/metrics.json",
                                                         "arrays": "results/evaluation/ct_axial/arrays.npz"})
    assert jobs.evaluation_job(smk) == EvaluationJob(
        label="CT axial", generation="results/samples/ct_axial/multi_inference.npz",
        segmentor="results/models/segmentor/ct.pt", reference=("results/slices/ct/axial/store",),
        oracle=("results/oracle/ct/axial/amos_0001.npz",), labels=AMOS15, device=CPU, max_slices=32, seed=1234,
        out_dir="results/evaluation/ct_axial", inception_weights="fid.pth", poster_inception_weights="")
    smk.input.oracle = []  # not the phantom: no oracle renders
    assert jobs.evaluation_job(smk).oracle == ()


def test_oracle_job_takes_the_contrasts_preprocessing(config):
    params = {"phantom": config["phantom"], "seed": 1234, "k": 4, "labels": "amos15",
              "preprocess": preprocess_params(config, "mri")}
    renders = ["results/oracle/mri/axial/amos_0001.npz", "results/oracle/mri/coronal/amos_0001.npz"]
    smk = stand_in(config, params, input={"label": "results/data/phantom/labelsTr/amos_0001.nii.gz"},
                   output={"renders": renders}, wildcards={"case": "amos_0001", "contrast": "mri"})
    assert jobs.oracle_job(smk) == OracleJob(
        case="amos_0001", contrast="mri", label_path="results/data/phantom/labelsTr/amos_0001.nii.gz",
        phantom=config["phantom"], seed=1234, k=4, labels=AMOS15, image_size=48, min_foreground=16, ct_window=None,
        mri_percentiles=[0.5, 99.5], outputs=tuple(renders))



def test_oracle_job_takes_the_cases_own_envelope(config):
    """With the body envelope on, an MRI render of a CT case is sliced with the CT case's envelope, derived from
    its own image (input ``image``) with the CT threshold."""
    config["preprocess"]["body"]["mode"] = "threshold"
    params = {"phantom": config["phantom"], "seed": 1234, "k": 4, "labels": "amos15",
              "preprocess": preprocess_params(config, "mri", body_modality="ct")}
    smk = stand_in(config, params, input={"label": "l.nii.gz", "image": "i.nii.gz"},
                   output={"renders": ["results/oracle/mri/axial/amos_0001.npz"]},
                   wildcards={"case": "amos_0001", "contrast": "mri"})
    job = jobs.oracle_job(smk)
    assert (job.body, job.case_image, job.case_modality) == (BodySettings(mode="threshold", ct_threshold_hu=-500),
                                                            "i.nii.gz", "ct")
    assert job.mri_percentiles == [0.5, 99.5] and job.ct_window is None  # the renders' own contrast


def test_diffusion_train_job_takes_speed_from_the_config_and_the_rest_from_params(config):
    params = diffusion_params(config)
    params["train"]["lr"] = 0.5  # the rule's params shape the model
    smk = stand_in(config, {"checkpoint": "checkpoints/diffusion/ct_all.ckpt", "diffusion": params, "labels": "amos15",
                            "seed": 1234},
                   input={"stores": ["s/axial/store", "s/coronal/store"]},
                   output={"model": "m.pt", "loss": "m_loss.csv", "figure": "m.png"},
                   wildcards={"modality": "ct", "view": "all"})
    before = copy.deepcopy(params)
    job = jobs.diffusion_train_job(smk)
    assert params == before  # the params are read, never changed
    assert job == DiffusionTrainJob(
        modality="ct", view="all", stores=("s/axial/store", "s/coronal/store"), labels=AMOS15,
        denoiser=DenoiserConfig(num_classes=16, conditioning="concat", channels=[16, 32, 64],
                                attention_levels=[False, False, False], num_res_blocks=1, use_flash_attention=False),
        scheduler=SchedulerConfig(num_train_timesteps=1000, schedule="cosine", prediction_type="sample", min_snr_gamma=10.0),
        train=TrainSettings(steps=1200, lr=0.5, warmup_steps=50, ema_decay=0.99, checkpoint_every=17, seed=1234,
                            compile=True, bf16=False),
        batch_size=16, ablation_p=0.0, checkpoint="checkpoints/diffusion/ct_all.ckpt", device=CPU,
        loader=LoaderSettings(workers=3, prefetch=5, pin_memory=False), world_size=1, model="m.pt", loss="m_loss.csv",
        figure="m.png")
    config["compute"].update(gpus=4)  # data parallelism needs CUDA: one process on the CPU
    assert jobs.diffusion_train_job(smk).world_size == 1
    smk.params.body = True  # the masks carry the body envelope (id 16): one more mask channel, recorded in the job
    job = jobs.diffusion_train_job(smk)
    assert (job.denoiser.num_classes, job.body_id) == (17, 16)


def test_segmentor_train_job(config):
    params = segmentor_params(config)
    smk = stand_in(config, {"checkpoint": "checkpoints/segmentor/mri.ckpt", "segmentor": params, "labels": "amos15",
                            "seed": 7},
                   input={"stores": ["s/axial/store"]}, output={"model": "seg.pt", "loss": "seg_loss.csv"},
                   wildcards={"modality": "mri"})
    assert jobs.segmentor_train_job(smk) == SegmentorTrainJob(
        modality="mri", stores=("s/axial/store",), splits=["train", "val"], labels=AMOS15,
        config=SegmentorConfig(num_classes=16, channels=[16, 32, 64, 128], strides=[2, 2, 2], num_res_units=1),
        train=TrainSettings(steps=1500, lr=0.01, warmup_steps=20, weight_decay=params["train"]["weight_decay"],
                            ema_decay=0.9, checkpoint_every=19, seed=7, compile=False, bf16=False),
        batch_size=32, augmentation=True, checkpoint="checkpoints/segmentor/mri.ckpt", device=CPU,
        loader=LoaderSettings(workers=3, prefetch=5, pin_memory=False), world_size=1, model="seg.pt",
        loss="seg_loss.csv")


def test_slice_case_job_maps_each_view_to_its_files(config):
    params = {"labels": "amos15", "remap": "totalsegmentator_to_amos", "preprocess": preprocess_params(config, "ct")}
    shards = [f"results/slices/ct/{v}/amos_0001.npz" for v in ("axial", "coronal")]
    previews = [f"results/slices/ct/{v}/previews/amos_0001" for v in ("axial", "coronal")]
    smk = stand_in(config, params, input={"image": "i.nii.gz", "label": "l.nii.gz"},
                   output={"shards": shards, "previews": previews}, wildcards={"modality": "ct", "case": "amos_0001"})
    assert jobs.slice_case_job(smk) == SliceCaseJob(
        case="amos_0001", modality="ct", image="i.nii.gz", label="l.nii.gz", labels=AMOS15,
        remap=load_remap("totalsegmentator_to_amos", AMOS15), shards=dict(zip(("axial", "coronal"), shards)),
        previews=dict(zip(("axial", "coronal"), previews)), image_size=48, min_foreground=16, ct_window=[-175, 250],
        mri_percentiles=None, previews_per_case=1)
    smk.params.remap = ""
    assert jobs.slice_case_job(smk).remap is None
    assert jobs.slice_case_job(smk).body == BodySettings()  # off: no body params
    config["preprocess"]["body"].update(mode="sheet")
    smk.params.preprocess = preprocess_params(config, "ct")
    smk.input.body = "b.nii.gz"
    job = jobs.slice_case_job(smk)
    assert (job.body, job.body_mask) == (BodySettings(mode="sheet"), "b.nii.gz")


def test_evaluation_figures_job(config):
    inputs = {"metrics": ["e/ct_axial/metrics.json"], "panel": ["s/ct_axial/reconstruction.npz"],
              "losses": ["m/diffusion/ct_axial_loss.csv", "m/segmentor/ct_loss.csv"]}
    smk = stand_in(config, {"labels": "amos15"}, input=inputs,
                   output={"panel": "f/generations.png", "dice": "f/dice.png", "metrics": "f/metrics.png",
                           "losses": "f/losses.png"})
    assert jobs.evaluation_figures_job(smk) == EvaluationFiguresJob(
        metrics=("e/ct_axial/metrics.json",), generations=("s/ct_axial/reconstruction.npz",),
        losses=("m/diffusion/ct_axial_loss.csv", "m/segmentor/ct_loss.csv"), labels=AMOS15,
        panel_figure="f/generations.png", dice_figure="f/dice.png", metrics_figure="f/metrics.png",
        loss_figure="f/losses.png")
    assert loss_panels(inputs["losses"]) == {LOSS_PANELS["diffusion"]: {"CT axial": Path(inputs["losses"][0])},
                                            LOSS_PANELS["segmentor"]: {"CT": Path(inputs["losses"][1])}}


def test_the_builders_import_the_stages_in_the_job_only():
    """The Snakefile imports segdiff.pipeline at every parse: the builders import the stage modules (torch
    models, MONAI, matplotlib) when a job calls them, never at the module's import."""
    tree = ast.parse(Path(jobs.__file__).read_text())
    imported = [node.module if isinstance(node, ast.ImportFrom) else alias.name for node in tree.body
                if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names]
    assert [m for m in imported if m.startswith("segdiff")] == ["segdiff.pipeline.job_params"]
    assert not {"torch", "numpy", "pandas"} & {m.split(".")[0] for m in imported}
