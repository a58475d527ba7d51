"""The data rules run through Snakemake itself, on tiny configs in a temporary working directory."""

from __future__ import annotations

import copy
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import scipy.linalg
import torch
import yaml
from conftest import REPO, TOTALSEG, ras_pair, save
from studies import DATA_ONLY, STUDY, TINY, hermetic_env, job_counts, snakemake

from segdiff.models.diffusion import load_diffusion
from segdiff.sampling.files import read_generation
from segdiff.data.shards import read_shard
from monai.losses import DiceLoss
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

pytestmark = pytest.mark.workflow

def test_workflow_subprocesses_run_this_checkout(tmp_path):
    proc = subprocess.run([sys.executable, "-c", "import segdiff; print(segdiff.__file__)"], capture_output=True,
                          text=True, env=hermetic_env(tmp_path / "x"), cwd=tmp_path, check=True)
    assert Path(proc.stdout.strip()).resolve().is_relative_to((REPO / "src").resolve()), proc.stdout


@pytest.fixture(scope="module")
def phantom_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("phantom")
    snakemake(workdir, TINY)
    return workdir


def test_phantom_study_yields_shards_manifests_and_figure(phantom_run):
    results = phantom_run / "results"
    cases = pd.read_csv(results / "data/cases.tsv", sep="\t")
    assert len(cases) == 6 and set(cases["modality"]) == {"ct", "mri"}
    for modality in ("ct", "mri"):
        for view in ("axial", "coronal", "sagittal"):
            manifest = pd.read_csv(results / f"slices/{modality}/{view}/manifest.tsv", sep="\t")
            assert sorted(manifest["split"]) == ["test", "train", "val"]  # 3 cases: one per split
            for row in manifest.itertuples():
                shard = read_shard(phantom_run / row.shard)
                assert len(shard.slice) == row.n_slices > 0
                assert shard.image.shape[1:] == (16, 16)
                assert shard.mask.max() <= (15 if modality == "ct" else 13)
                assert list((results / f"slices/{modality}/{view}/previews/{row.case}").glob("*_mask.png"))
    # one split per case across every subset
    splits = {}
    for manifest in results.glob("slices/*/*/manifest.tsv"):
        for row in pd.read_csv(manifest, sep="\t").itertuples():
            assert splits.setdefault(row.case, row.split) == row.split
    assert (results / "figures/slices_preview.png").stat().st_size > 10_000
    provenance = yaml.safe_load((results / "provenance.json").read_text())
    assert provenance["seed"] == 3 and provenance["packages"]["nibabel"] == nib.__version__
    assert (phantom_run / "logs/phantom.log").exists() and list((phantom_run / "benchmarks/slices").rglob("*.tsv"))


def test_rerun_one_view_by_target_file(phantom_run):
    manifest = phantom_run / "results/slices/mri/sagittal/manifest.tsv"
    manifest.unlink()
    proc = snakemake(phantom_run, TINY, str(manifest.relative_to(phantom_run)))
    assert manifest.exists()
    assert "slice_case" not in proc.stderr.split("Job stats:")[-1]  # shards were up to date: only the manifest ran


def test_without_kept_shards_the_disk_holds_the_stores_alone(tmp_path):
    """preprocess.keep_shards false: the shards are temp(), gone once the stores are built; the study stays whole.
    Rebuilding one view's store re-slices its modality, whose slicing writes every view, so that modality's three
    stores are rebuilt (the other modality's are not) and its shards deleted again."""
    config = copy.deepcopy(TINY)
    config["preprocess"]["keep_shards"] = False
    work = tmp_path / "run"
    snakemake(work, config)
    slices = work / "results/slices"
    assert not list(slices.glob("*/*/*.npz"))
    assert len(list(slices.glob("*/*/store/index.tsv"))) == 6
    assert (work / "results/figures/slices_preview.png").stat().st_size > 10_000  # drawn from the stores
    assert job_counts(snakemake(work, config, "-n")) == {}
    before = (slices / "mri/axial/store/image.npy").stat().st_mtime_ns
    proc = snakemake(work, config, "--forcerun", "results/slices/ct/axial/manifest.tsv")
    assert job_counts(proc)["slice_case"] == 3 and job_counts(proc)["manifest"] == 3
    assert not list(slices.glob("*/*/*.npz")) and (slices / "mri/axial/store/image.npy").stat().st_mtime_ns == before
    assert job_counts(snakemake(work, config, "-n")) == {}


def test_dry_run_and_lint_are_clean(phantom_run):
    snakemake(phantom_run, TINY)  # bring everything up to date after the reruns above
    dry = snakemake(phantom_run, TINY, "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr
    lint = snakemake(phantom_run, TINY, "--lint")
    assert "Congratulations" in lint.stdout + lint.stderr


def test_real_ct_fixture_with_totalsegmentator_remap(tmp_path):
    sheet = tmp_path / "cases.tsv"
    sheet.write_text(f"case\tmodality\timage\tlabel\tsplit\ntotalseg_ct\tct\t{TOTALSEG / 'ct.nii.gz'}\t{TOTALSEG / 'seg.nii.gz'}\ttest\n")
    config = {"dataset": {"source": "sheet", "sheet": str(sheet), "remap": "totalsegmentator_to_amos"},
              "preprocess": {"image_size": 64, "min_foreground": 20}, **DATA_ONLY}
    snakemake(tmp_path / "run", config)
    log = (tmp_path / "run/logs/slices/ct/totalseg_ct.log").read_text()
    assert "unmapped source ids" in log  # lungs, bones, muscles ... became background
    for view in ("axial", "coronal", "sagittal"):
        shard = read_shard(tmp_path / f"run/results/slices/ct/{view}/totalseg_ct.npz")
        assert len(shard.slice) > 5
        assert set(np.unique(shard.mask)) <= set(range(16))
        assert 6 in shard.mask  # liver
        longest = {"axial": 122, "coronal": 122, "sagittal": 101}[view]  # voxels of 3 mm along the longer in-plane axis
        assert shard.pixel_mm == pytest.approx(3.0 * longest / 64, rel=1e-3)
    # liver mean intensity in the CT window: soft tissue, well above fat and below bone
    axial = read_shard(tmp_path / "run/results/slices/ct/axial/totalseg_ct.npz")
    liver = axial.image[axial.mask == 6].mean()
    assert 0.45 < liver < 0.65, liver  # ~ 40-100 HU in [-175, 250]


def test_bad_case_fails_alone_with_keep_going(tmp_path):
    image, label, affine = ras_pair()
    good = [save(image, affine, tmp_path / "good_img.nii.gz"), save(label, affine, tmp_path / "good_lab.nii.gz")]
    bad_img = save(image, affine, tmp_path / "bad_img.nii.gz")
    bad_lab = tmp_path / "bad_lab.nii.gz"
    bad_lab.write_bytes(save(label, affine, tmp_path / "x.nii.gz").read_bytes()[:200])  # truncated
    sheet = tmp_path / "cases.tsv"
    sheet.write_text("case\tmodality\timage\tlabel\tsplit\n"
                     f"good\tct\t{good[0]}\t{good[1]}\ttrain\nbad\tct\t{bad_img}\t{bad_lab}\ttest\n")
    config = {"dataset": {"source": "sheet", "sheet": str(sheet)}, "views": ["axial"], "preprocess": {"image_size": 16},
              **DATA_ONLY}
    proc = snakemake(tmp_path / "run", config, "--keep-going", check=False)
    assert proc.returncode != 0
    assert (tmp_path / "run/results/slices/ct/axial/good.npz").exists()
    assert not list((tmp_path / "run/results/slices/ct/axial").glob("bad*"))
    assert not (tmp_path / "run/results/slices/ct/axial/previews/bad").exists()  # nor its previews
    assert (tmp_path / "run/results/slices/ct/axial/previews/good").is_dir()
    assert not list((tmp_path / "run/results").rglob(".*tmp*"))  # no temporary file or folder left behind
    log = (tmp_path / "run/logs/slices/ct/bad.log").read_text().strip().splitlines()
    assert len(log) == 1 and "ERROR" in log[0] and "bad_lab.nii.gz: " in log[0], log


@pytest.mark.parametrize(
    "config,message",
    [
        ({"preprocess": {"image_size": "big"}}, "config key 'preprocess.image_size': 'big' is not of type 'integer'"),
        ({"views": ["axial"], "viewz": 1}, "config key 'viewz': unknown key"),
        ({"dataset": {"source": "sheet", "sheet": "missing.tsv"}}, "missing.tsv: case sheet not found"),
        ({"dataset": {"labels": "nowhere.tsv"}}, "nowhere.tsv: file not found"),
        ({"diffusion": {"runs": ["ct/all"]}, "views": ["axial"]}, "config key 'diffusion.runs.0': view all needs"),
        ({"sampling": {"multimodal": ["ct>mri/coronal"]}}, "config key 'sampling.multimodal.0': needs the model mri/coronal"),
        ({"sampling": {"sampler": "ddpm", "steps": 50}}, "config key 'sampling.steps': DDPM steps through every training timestep"),
    ],
)
def test_bad_config_stops_before_any_job(tmp_path, config, message):
    proc = snakemake(tmp_path, config, check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


def test_sheet_row_with_missing_file_stops_before_any_job(tmp_path):
    image, label, affine = ras_pair()
    img = save(image, affine, tmp_path / "img.nii.gz")
    sheet = tmp_path / "cases.tsv"
    sheet.write_text(f"case\tmodality\timage\tlabel\nc1\tct\t{img}\t{tmp_path / 'gone.nii.gz'}\n")
    proc = snakemake(tmp_path / "run", {"dataset": {"source": "sheet", "sheet": str(sheet)}, **DATA_ONLY}, check=False)
    assert proc.returncode != 0
    assert "cases.tsv: row 2 (case 'c1'), column 'label': file not found" in proc.stdout + proc.stderr
    assert not (tmp_path / "run/results").exists()


#: the whole study on the tiny slices, the poster's five columns: .test/config/config.yaml
POSTER_RUNS = STUDY["diffusion"]["runs"]


@pytest.fixture(scope="module")
def study(phantom_run):
    """The finished tiny study in ``phantom_run`` (its first run's process); its results go at the end."""
    proc = snakemake(phantom_run, STUDY)  # the slices exist already: only model, sampling and evaluation jobs run
    yield phantom_run, proc
    for sub in ("models", "samples", "figures/loss", "evaluation", "oracle"):
        shutil.rmtree(phantom_run / "results" / sub, ignore_errors=True)


def test_whole_study(study):
    """train -> sample (reconstruction, multi-inference, CT->MRI) -> oracle -> evaluate -> table, on the
    slices above. (The mask by addition runs the same chain in test_slurm.py.)"""
    phantom_run, proc = study
    assert "slice_case" not in job_counts(proc)
    results = phantom_run / "results"
    model, _, meta = load_diffusion(results / "models/diffusion/mri_axial.pt")
    assert model.config.conditioning == "concat" and meta["view"] == "axial"
    assert not (phantom_run / "checkpoints/diffusion/mri_axial.ckpt").exists()  # removed once the model is written
    assert len(pd.read_csv(results / "models/diffusion/mri_axial_loss.csv")) == 4
    recon = read_generation(results / "samples/mri_axial/reconstruction.npz")
    multi = read_generation(results / "samples/mri_axial/multi_inference.npz")
    cross = read_generation(results / "samples/ct2mri_axial/multimodal.npz")
    every = read_generation(results / "samples/ct_all/multi_inference.npz")
    test_mri = pd.read_csv(results / "slices/mri/axial/manifest.tsv", sep="\t").query("split == 'test'")
    assert recon["generated"].shape == (min(12, int(test_mri["n_slices"].sum())), 1, 16, 16)
    assert multi["generated"].shape[1] == 2 and not np.array_equal(multi["generated"][:, 0], multi["generated"][:, 1])
    np.testing.assert_array_equal(recon["generated"][:, 0], multi["generated"][:, 0])  # generation 1 is the reconstruction
    assert cross["generated"].shape[1] == 2 and cross["info"]["source"] == "ct"  # its originals are CT slices
    assert set(cross["case"]) <= set(pd.read_csv(results / "data/cases.tsv", sep="\t").query("modality == 'ct'")["case"])
    assert len(every["case"]) == 12 and set(every["view"]) == {"axial", "coronal", "sagittal"}  # stratified subset
    for arrays in (recon, multi, cross, every):
        assert 0.0 <= arrays["generated"].min() and arrays["generated"].max() <= 1.0
    assert (results / "samples/ct2mri_axial/multimodal.png").stat().st_size > 5_000
    assert list((results / "oracle/mri/axial").glob("amos_000*.npz"))  # MRI renders of the CT test anatomy
    check_table_recomputes(results)
    for figure in ("generations", "dice_per_organ", "metrics_by_run", "loss_curves", "oracle_vs_generated_ct",
                   "oracle_vs_generated_mri"):
        assert (results / f"figures/{figure}.png").stat().st_size > 10_000
    snakemake(phantom_run, STUDY, "--report", "report.html")
    assert (phantom_run / "report.html").stat().st_size > 100_000  # figures are embedded


def _dice(pred, ref):
    scores = [2 * np.sum((pred == c) & (ref == c)) / (np.sum(pred == c) + np.sum(ref == c)) for c in range(1, 16) if (ref == c).any()]
    return np.mean(scores)


def _frechet(a, b):
    mu_a, mu_b, cov_a, cov_b = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2 * root))


def _frd(real, generated):
    """FRDv1 as frd-score defines it: z-score by the real set, drop non-finite columns, log of the Fréchet distance."""
    mu, sd = real.mean(0), real.std(0)
    a, b = (real - mu) / sd, (generated - mu) / sd
    keep = np.isfinite(a).all(0) & np.isfinite(b).all(0)
    return np.log(_frechet(a[:, keep].astype(np.float32).astype(np.float64), b[:, keep].astype(np.float32).astype(np.float64)))


def _poster_dice(pred, ref):
    onehot = lambda x: torch.nn.functional.one_hot(torch.as_tensor(x, dtype=torch.long), 16).permute(0, 3, 1, 2).float()
    loss = DiceLoss(include_background=True, to_onehot_y=False, softmax=False)
    return np.mean([1 - loss(onehot(p[None]), onehot(r[None])).item() for p, r in zip(pred, ref)])


def check_table_recomputes(results):
    """Every number of the table comes back from the saved arrays, computed independently here."""
    table = pd.read_csv(results / "table.csv", index_col=0, dtype=str, keep_default_na=False)
    assert list(table.columns) == ["CT axial", "CT", "MRI axial", "MRI", "CT→MRI axial"]
    assert list(table.index[:5]) == ["PSNR ↑", "SSIM ↑", "FID ↓", "FRD ↓", "FD_seg ↓ (segmentor features; not FID)"]
    assert table.loc["PSNR ↑", "CT→MRI axial"] == "n/a" and table.loc["SSIM ↑", "CT→MRI axial"] == "n/a"
    assert (table.loc["FID ↓"] == "n/a").all() and (table.loc["FID (poster protocol)"] == "n/a").all()  # empty torch hub
    assert "FID n/a" in (results / "table.md").read_text()

    def cell(row, column):
        return float(table.loc[row, column])

    for run, column in (("ct_axial", "CT axial"), ("ct_all", "CT"), ("mri_axial", "MRI axial"), ("mri_all", "MRI"),
                        ("ct2mri_axial", "CT→MRI axial")):
        a = dict(np.load(results / f"evaluation/{run}/arrays.npz"))
        gen, oracle = a["generated"], a["oracle"]
        assert cell("Dice_gen ↑", column) == pytest.approx(_dice(a["pred_generated"], a["mask"]), abs=6e-4)
        assert cell("Dice_orig ↑", column) == pytest.approx(_dice(a["pred_reference"], a["reference_mask"]), abs=6e-4)
        assert cell("Dice_oracle (segmentor on oracle renders)", column) == pytest.approx(_dice(a["pred_oracle"], a["mask"]), abs=6e-4)
        ratio = _dice(a["pred_generated"], a["mask"]) / _dice(a["pred_reference"], a["reference_mask"])
        assert cell("Dice_gen / Dice_orig (goal 0.8–1.05)", column) == pytest.approx(ratio, abs=6e-4)
        inside = a["mask"] > 0
        div_gen, div_oracle = gen.std(axis=1)[inside].mean(), oracle.std(axis=1)[inside].mean()
        assert cell("Diversity of the k generations (std inside organs)", column) == pytest.approx(div_gen, abs=6e-5)
        assert cell("Diversity of k oracle renders (std inside organs)", column) == pytest.approx(div_oracle, abs=6e-5)
        assert cell("Diversity ratio, generations / oracle (goal 0.5–1.5)", column) == pytest.approx(div_gen / div_oracle, abs=6e-4)
        outside = ~np.isin(a["mask"], range(1, 16))  # not an organ of amos15 (background or a body envelope)
        assert cell("Diversity of the k generations (std outside organs)", column) == pytest.approx(
            gen.std(axis=1)[outside].mean(), abs=6e-5)
        assert cell("Diversity of k oracle renders (std outside organs)", column) == pytest.approx(
            oracle.std(axis=1)[outside].mean(), abs=6e-5)
        assert table.loc["Quality flags", column] == "ok" or table.loc["Quality flags", column].startswith("⚠ ")
        for name, key in (("FD_seg ↓ (segmentor features; not FID)", "generated"), ("FD_seg oracle floor", "oracle")):
            assert cell(name, column) == pytest.approx(_frechet(a[f"features_{key}"], a["features_reference"]), rel=1e-3, abs=6e-4)
        for name, key in (("FRD ↓", "generated"), ("FRD oracle floor", "oracle")):
            assert cell(name, column) == pytest.approx(_frd(a["radiomics_reference"], a[f"radiomics_{key}"]), rel=1e-3, abs=6e-4)
        assert cell("Dice_gen (poster protocol)", column) == pytest.approx(_poster_dice(a["pred_generated"], a["mask"]), abs=6e-4)
        assert cell("Dice_orig (poster protocol)", column) == pytest.approx(
            _poster_dice(a["pred_reference"], a["reference_mask"]), abs=6e-4)
        assert int(table.loc["test slices", column]) == len(gen) and int(table.loc["generations per mask (k)", column]) == 2
        if column != "CT→MRI axial":
            for name, images in (("PSNR ↑", gen[:, 0]), ("PSNR of an oracle render (a second scan)", oracle[:, 0])):
                psnr = np.mean([min(100.0, peak_signal_noise_ratio(o, g, data_range=1.0)) for o, g in zip(a["original"], images)])
                assert cell(name, column) == pytest.approx(psnr, abs=6e-3)
            ssim = np.mean([structural_similarity(o, g, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                                  use_sample_covariance=False) for o, g in zip(a["original"], gen[:, 0])])
            assert cell("SSIM ↑", column) == pytest.approx(ssim, abs=6e-4)
            # poster protocol: 8-bit images, generations rounded, originals min-max stretched (save_image)
            g8 = np.round(gen[:, 0] * 255).astype(np.uint8)
            o8 = [np.clip((o - o.min()) / (o.max() - o.min()) * 255 + 0.5, 0, 255).astype(np.uint8) for o in a["original"]]
            psnr8 = np.mean([peak_signal_noise_ratio(o, g, data_range=255) for o, g in zip(o8, g8)])
            assert cell("PSNR (poster protocol)", column) == pytest.approx(psnr8, abs=6e-3)
        per_slice = pd.read_csv(results / f"evaluation/{run}/per_slice.csv")
        assert len(per_slice) == len(gen)


def _merged(base: dict, change: dict) -> dict:
    """``base`` with ``change`` merged in, nested mappings key by key (as Snakemake's ``--config``)."""
    out = dict(base)
    for key, value in change.items():
        out[key] = _merged(base.get(key, {}), value) if isinstance(value, dict) else value
    return out


#: What one change plans on the finished tiny study (4 runs + CT→MRI axial, 3 cases per modality):
#: {rule: jobs}. The README's table "What reruns when you change a setting" shows these rows, and
#: test_readme_rerun_table_is_the_tested_one holds the two together.
RERUNS = {
    "`diffusion.runs`: add `ct/coronal`": (
        {"diffusion": {"runs": [*POSTER_RUNS, "ct/coronal"]}},
        {"train_diffusion": 1, "sample_diffusion": 1, "gather_samples": 1, "evaluate": 1, "table": 1,
         "evaluation_figures": 1, "provenance": 1}),
    "`sampling.multimodal`: add `mri>ct/axial`": (
        {"sampling": {"multimodal": ["ct>mri/axial", "mri>ct/axial"]}},
        {"oracle_case": 1, "sample_multimodal": 1, "gather_multimodal": 1, "evaluate": 1, "table": 1, "evaluation_figures": 1,
         "provenance": 1}),
    "`compute.*` (memory, threads, workers, device, precision, GPUs), `sampling.batch_size`, `diffusion.train.checkpoint_every`, `compile`": (
        {"compute": {"sample_mem_mb": 3001, "train_mem_mb": 5000, "train_threads": 2, "loader_workers": 1, "precision": "fp32",
                     "device": "cpu"},
         "sampling": {"batch_size": 16}, "diffusion": {"train": {"checkpoint_every": 3, "compile": True}}},
        {}),
    "`sampling.spacing` under DDIM (`eta` under DPM-Solver++): a setting the sampler ignores": (
        {"sampling": {"spacing": "linear"}},
        {"provenance": 1}),
    "`sampling.steps`, `sampler`, `eta` (DDIM), `spacing` (DPM-Solver++)": (
        {"sampling": {"steps": 4}},
        {"sample_diffusion": 4, "sample_multimodal": 1, "gather_samples": 4, "gather_multimodal": 1, "evaluate": 5,
         "table": 1, "evaluation_figures": 1, "oracle_figure": 2, "provenance": 1}),
    "`diffusion.train.lr` (any other `diffusion` key but `runs`)": (
        {"diffusion": {"train": {"lr": 0.002}}},
        {"train_diffusion": 4, "sample_diffusion": 4, "sample_multimodal": 1, "gather_samples": 4, "gather_multimodal": 1,
         "evaluate": 5, "table": 1, "evaluation_figures": 1, "oracle_figure": 2, "provenance": 1}),
    "`sampling.k`": (
        {"sampling": {"k": 3}},
        {"oracle_case": 3, "sample_diffusion": 4, "sample_multimodal": 1, "gather_samples": 4, "gather_multimodal": 1, "evaluate": 5,
         "table": 1, "evaluation_figures": 1, "oracle_figure": 2, "provenance": 1}),
    "`sampling.chunks`": (
        {"sampling": {"chunks": 2}},
        {"sample_diffusion": 8, "sample_multimodal": 2, "gather_samples": 4, "gather_multimodal": 1, "evaluate": 5,
         "table": 1, "evaluation_figures": 1, "oracle_figure": 2}),
    "`evaluation.max_slices`": (
        {"evaluation": {"max_slices": 10}},
        {"sample_diffusion": 4, "sample_multimodal": 1, "gather_samples": 4, "gather_multimodal": 1, "evaluate": 5,
         "table": 1, "evaluation_figures": 1, "oracle_figure": 2, "provenance": 1}),
    "`preprocess.ct_window` (`mri_percentiles` alike for MRI)": (
        {"preprocess": {"ct_window": [-150, 250]}},
        {"slice_case": 3, "manifest": 3, "preview_figure": 1, "oracle_case": 1, "train_diffusion": 2, "train_segmentor": 1,
         "sample_diffusion": 2, "sample_multimodal": 1, "gather_samples": 2, "gather_multimodal": 1, "evaluate": 3,
         "table": 1, "evaluation_figures": 1, "oracle_figure": 1, "provenance": 1}),
    "`preprocess.body.mode`: `threshold` (the body envelope on)": (
        {"preprocess": {"body": {"mode": "threshold"}}},
        {"slice_case": 6, "manifest": 6, "preview_figure": 1, "oracle_case": 3, "train_diffusion": 4, "train_segmentor": 2,
         "sample_diffusion": 4, "sample_multimodal": 1, "gather_samples": 4, "gather_multimodal": 1, "evaluate": 5,
         "table": 1, "evaluation_figures": 1, "oracle_figure": 2, "provenance": 1}),
    "`preprocess.body.ct_threshold_hu` (`mri_threshold`) while the envelope is off": (
        {"preprocess": {"body": {"ct_threshold_hu": -400}}},
        {"provenance": 1}),
    "`preprocess.*` (any other key)": (
        {"preprocess": {"min_foreground": 5}},
        {"slice_case": 6, "manifest": 6, "preview_figure": 1, "oracle_case": 3, "train_diffusion": 4, "train_segmentor": 2,
         "sample_diffusion": 4, "sample_multimodal": 1, "gather_samples": 4, "gather_multimodal": 1, "evaluate": 5,
         "table": 1, "evaluation_figures": 1, "oracle_figure": 2, "provenance": 1}),
    "`seed`": (
        {"seed": 4},
        {"phantom": 1, "cases": 1, "slice_case": 6, "manifest": 6, "preview_figure": 1, "oracle_case": 3, "train_diffusion": 4,
         "train_segmentor": 2, "sample_diffusion": 4, "sample_multimodal": 1, "gather_samples": 4, "gather_multimodal": 1, "evaluate": 5,
         "table": 1, "evaluation_figures": 1, "oracle_figure": 2, "provenance": 1}),
    "`segmentor.*`": (
        {"segmentor": {"train": {"lr": 0.02}}},
        {"train_segmentor": 2, "evaluate": 5, "table": 1, "evaluation_figures": 1, "oracle_figure": 2, "provenance": 1}),
    "`usefulness.*` (its own target `usefulness` unless `in_all`)": (
        {"usefulness": {"few_real_fraction": 0.5, "sets": ["generated"]}},
        {"provenance": 1}),
}


def test_a_change_plans_the_jobs_it_affects_and_no_other(study):
    phantom_run, _ = study
    planned = {change: job_counts(snakemake(phantom_run, _merged(STUDY, override), "-n"))
               for change, (override, _) in RERUNS.items()}
    planned = {change: {rule: n for rule, n in jobs.items() if rule not in ("all", "total")} for change, jobs in planned.items()}
    assert planned == {change: jobs for change, (_, jobs) in RERUNS.items()}


def _readme_section(title: str) -> str:
    text = (REPO / "README.md").read_text()
    return text.split(f"### {title}\n", 1)[1].split("\n#", 1)[0]


def test_readme_rerun_table_is_the_tested_one():
    """The README's table "What reruns when you change a setting": the rows of RERUNS, each job count as tested."""
    rows = [line.strip("|").split("|") for line in _readme_section("What reruns when you change a setting").splitlines()
            if line.startswith("| ") and not line.startswith("| Change")]
    readme = {}
    for change, _, jobs in rows:
        counts = [item.split() for item in jobs.strip().split(", ")] if jobs.strip() != "none" else []
        readme[change.strip()] = {rule: int(n) for rule, n in counts}
    assert readme == {change: jobs for change, (_, jobs) in RERUNS.items()}


def test_rerun_one_orientation_as_the_readme_says(study):
    """The README's command, word for word: the axial runs retrain, resample and re-evaluate; the table keeps
    the other columns; no slicing, segmentor or other model job runs."""
    phantom_run, _ = study
    command = [line.strip() for line in _readme_section("Rerun one orientation").splitlines()
               if line.strip().startswith("snakemake ") and "--forcerun" in line]
    assert len(command) == 1, command
    args = shlex.split(command[0])[1:]  # the README's arguments; the helper adds only -s, -d and --configfile
    results = phantom_run / "results"
    kept = [results / f"models/diffusion/{run}.pt" for run in ("ct_all", "mri_all")] + [
        results / f"models/segmentor/{m}.pt" for m in ("ct", "mri")] + [
        results / f"evaluation/{run}/metrics.json" for run in ("ct_all", "mri_all")] + [
        *results.glob("slices/*/*/store/image.npy"), *results.glob("oracle/*/*/*.npz")]
    redone = [results / f"models/diffusion/{run}.pt" for run in ("ct_axial", "mri_axial")] + [
        results / f"evaluation/{run}/metrics.json" for run in ("ct_axial", "mri_axial", "ct2mri_axial")] + [
        results / "table.csv"]
    before = {path: path.stat().st_mtime_ns for path in kept + redone}
    table_before = pd.read_csv(results / "table.csv", index_col=0, dtype=str, keep_default_na=False)

    proc = snakemake(phantom_run, STUDY, *args)
    assert job_counts(proc) == {"train_diffusion": 2, "sample_diffusion": 2, "sample_multimodal": 1, "gather_samples": 2,
                                "gather_multimodal": 1, "evaluate": 3, "table": 1, "evaluation_figures": 1,
                                "oracle_figure": 2, "all": 1, "total": 16}
    assert all(path.stat().st_mtime_ns == before[path] for path in kept)
    assert all(path.stat().st_mtime_ns > before[path] for path in redone)
    table = pd.read_csv(results / "table.csv", index_col=0, dtype=str, keep_default_na=False)
    assert list(table.columns) == list(table_before.columns)  # every column is still there
    pd.testing.assert_frame_equal(table[["CT", "MRI"]], table_before[["CT", "MRI"]])  # the untouched runs' numbers
    assert job_counts(snakemake(phantom_run, STUDY, "-n")) == {}  # and the study is whole again


#: the jobs of `snakemake usefulness` on the finished tiny study: 2 modalities x 3 views of generated sets, 2 oracle
#: sets, 5 segmentors per modality and 6 scores (the real one reuses the study's segmentor)
USEFULNESS_JOBS = {"sample_trainset": 6, "oracle_trainset": 2, "train_segmentor_usefulness": 10, "score_usefulness": 12,
                   "usefulness_table": 1, "usefulness": 1}


def test_usefulness_target_trains_on_generated_and_scores_on_real(study):
    """`snakemake usefulness`: the generated training sets hold the real rows, every number recomputes from the
    saved counts, nothing of the study reruns, and each usefulness setting reruns only its own jobs."""
    from segdiff.core.labels import load_label_map
    from segdiff.data.store import SliceStore
    from segdiff.usefulness.score import usefulness_metrics

    phantom_run, _ = study
    results = phantom_run / "results"
    assert job_counts(snakemake(phantom_run, STUDY, "usefulness")) == {**USEFULNESS_JOBS, "total": 32}
    table = pd.read_csv(results / "usefulness/table.csv", index_col=0)
    assert list(table.columns) == ["CT Dice", "CT / real", "MRI Dice", "MRI / real"]
    assert list(table.index) == ["real (baseline)", "generated only (TSTR)", "real + generated", "few real (low-data baseline)",
                                 "few real + generated",
                                 "oracle renders (ceiling of generated)"]
    assert (table["CT / real"].iloc[0], table["MRI / real"].iloc[0]) == (1.0, 1.0)
    labels = load_label_map("amos15")
    for metrics in results.glob("usefulness/*/*/metrics.json"):
        saved = pd.read_json(metrics, typ="series")
        with np.load(metrics.parent / "counts.npz") as z:
            again = usefulness_metrics(z["counts"], z["view"], list(z["class_ids"]), labels)
        assert again["dice"] == pytest.approx(saved["dice"]) and again["n_test_slices"] == saved["n_test_slices"]
    real = SliceStore([results / f"slices/mri/{v}/store" for v in ("axial", "coronal", "sagittal")], ["train", "val"])
    generated = SliceStore(sorted(results.glob("usefulness/mri/generated/*/1-of-1"), key=lambda p: ["axial", "coronal",
                           "sagittal"].index(p.parent.name)), ["train", "val"])
    assert (generated.case == real.case).all() and (generated.view == real.view).all()
    assert np.array_equal(generated.read(np.arange(len(real)))[1], real.read(np.arange(len(real)))[1])
    assert (results / "figures/usefulness_dice_per_organ.png").stat().st_size > 10_000
    assert job_counts(snakemake(phantom_run, STUDY, "-n")) == {}  # the study itself is untouched
    few = job_counts(snakemake(phantom_run, _merged(STUDY, {"usefulness": {"few_real_fraction": 0.6}}), "-n", "usefulness"))
    assert few == {"train_segmentor_usefulness": 4, "score_usefulness": 4, "usefulness_table": 1, "usefulness": 1, "total": 10}
    steps = job_counts(snakemake(phantom_run, _merged(STUDY, {"sampling": {"k": 3}}), "-n", "usefulness"))
    assert steps == {}  # k is one generation per mask here: not a setting of the training sets
