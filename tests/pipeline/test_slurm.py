"""`snakemake --profile slurm` on a real Slurm (loopback, see slurm_cluster.py): the tiny study
through the SLURM executor equals a local run, and a training job cancelled halfway, or killed at
its time limit, resumes from its checkpoint to the same model as an uninterrupted run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO
from slurm_cluster import LoopbackSlurm
from studies import TINY, TINY_MODEL, hermetic_env, snakemake

from segdiff.core.checkpoints import CHECKPOINT_FORMAT, load_file
from segdiff.models.diffusion import load_diffusion
from segdiff.core.device import pick_device
from segdiff.core.labels import load_label_map
from segdiff.pipeline.jobs import sampler_settings
from segdiff.sampling.experiments import SampleJob, SampleRunJob, sample_run
from segdiff.sampling.files import read_generation
from segdiff.pipeline.job_memory import train_mem_mb

pytestmark = [pytest.mark.workflow, pytest.mark.slurm]

#: the tiny study at its smallest: one diffusion model (MRI axial, the mask by addition), its
#: reconstruction and multi-inference, CT->MRI, each sampled in 2 chunk jobs, their evaluation and
#: the table; every rule of the study runs
STUDY = {**TINY, "views": ["axial"],
         "diffusion": {"runs": ["mri/axial"], "model": TINY_MODEL, "conditioning": "add",
                       "scheduler": {"num_train_timesteps": 20},
                       "train": {"steps": 4, "batch_size": 4, "checkpoint_every": 2, "warmup_steps": 1}},
         "sampling": {"steps": 3, "k": 2, "batch_size": 8, "multimodal": ["ct>mri/axial"], "chunks": 2},
         "evaluation": {"max_slices": 12}}
#: one longer training for the kill cases: 3000 steps (~60-100 s on this machine's cores), a
#: checkpoint every 50, so that a one-minute time limit falls inside it
LONG = {**STUDY, "diffusion": {**STUDY["diffusion"],
                               "train": {"steps": 3000, "batch_size": 4, "checkpoint_every": 50, "warmup_steps": 1}}}
MODEL = "results/models/diffusion/mri_axial.pt"
CHECKPOINT = "checkpoints/diffusion/mri_axial.ckpt"
DATA = [f"results/slices/{m}/axial/manifest.tsv" for m in ("ct", "mri")]


@pytest.fixture(scope="module")
def cluster():
    slurm = LoopbackSlurm().start()
    print(f"loopback Slurm up in {slurm.setup_s:.2f} s")
    yield slurm
    slurm.stop()


def slurm_snakemake(cluster: LoopbackSlurm, workdir: Path, config: dict, *args: str) -> subprocess.CompletedProcess:
    """The literal `snakemake --profile slurm`, from the repository root, on a tiny config; the
    partition comes from SBATCH_PARTITION as on a real site."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", "--profile", "slurm", "-d", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "--jobs", "4", "--latency-wait", "5",
           "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1",
           "--slurm-keep-successful-logs", *args]
    env = {**hermetic_env(workdir), "SLURM_CONF": str(cluster.conf), "SBATCH_PARTITION": cluster.partition}
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)


def concurrently(**calls) -> dict:
    """Run the zero-argument ``calls`` in threads (the runs mostly wait on Slurm); their results by name."""
    results: dict = {}

    def run(name, call):
        try:
            results[name] = call()
        except BaseException as err:  # re-raised below, in the test's thread
            results[name] = err

    threads = [threading.Thread(target=run, args=item) for item in calls.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for value in results.values():
        if isinstance(value, BaseException):
            raise value
    return results


def submitted(proc: subprocess.CompletedProcess) -> dict[str, str]:
    """Snakemake job id -> Slurm job id, from the executor's log."""
    return dict(re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", proc.stderr))


def job_count(proc: subprocess.CompletedProcess) -> int:
    """The 'total' line of Snakemake's job stats, less the target rule ``all`` (no command)."""
    return int(re.search(r"^total\s+(\d+)", proc.stderr, re.M).group(1)) - int("localrule all:" in proc.stderr)


def assert_ok(proc, cluster):
    assert proc.returncode == 0, f"{proc.stderr[-6000:]}\n{cluster.logs()}"


def test_tiny_study_through_slurm_equals_local_run(cluster, tmp_path, monkeypatch):
    timed = {}

    def timed_run(name, call):
        tick = time.monotonic()
        proc = call()
        timed[name] = time.monotonic() - tick
        return proc

    runs = concurrently(local=lambda: timed_run("local", lambda: snakemake(tmp_path / "local", STUDY)),
                        slurm=lambda: timed_run("slurm", lambda: slurm_snakemake(cluster, tmp_path / "slurm", STUDY)))
    local, proc = runs["local"], runs["slurm"]
    assert_ok(proc, cluster)
    print(f"tiny study, side by side: local {timed['local']:.0f} s, Slurm {timed['slurm']:.0f} s; "
          f"Slurm setup {cluster.setup_s:.2f} s")

    # every job of the study was a Slurm job, and each one completed with exit code 0
    jobs = submitted(proc)
    assert len(jobs) == job_count(proc) == job_count(local) > 15
    known = {j["JobID"]: j for j in cluster.jobs()}
    for slurm_id in jobs.values():
        assert known[slurm_id]["State"] == "COMPLETED" and known[slurm_id]["ExitCode"] == "0:0", known[slurm_id]
    logs = list((tmp_path / "slurm/.snakemake/slurm_logs").rglob("*.log"))
    assert {p.stem for p in logs} >= set(jobs.values())  # one Slurm log per job, named by its job id
    assert "SLURM jobid" not in local.stderr

    # the same table, cell for cell, from the same model weights
    table = [pd.read_csv(tmp_path / run / "results/table.csv") for run in ("local", "slurm")]
    pd.testing.assert_frame_equal(table[0], table[1], check_exact=True)
    a, b = (load_diffusion(tmp_path / w / MODEL)[0].state_dict() for w in ("local", "slurm"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert load_diffusion(tmp_path / "slurm" / MODEL)[0].config.conditioning == "add"

    # sampling ran as 2 Slurm jobs per run, merged: the files equal one unsplit job's
    slurm_rules = [known[i]["Comment"].split("_wildcards")[0] for i in jobs.values()]
    assert slurm_rules.count("rule_sample_diffusion") == slurm_rules.count("rule_sample_multimodal") == 2
    monkeypatch.chdir(tmp_path / "slurm")  # the workflow's paths, as its jobs saw them (info names the model file)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # as the jobs ran (compute.sample_threads 2 by default)
    try:
        used = read_generation("results/samples/mri_axial/multi_inference.npz")["info"]  # the sampler settings the jobs used
        device = pick_device("auto")
        job = SampleJob(model=MODEL, stores=["results/slices/mri/axial/store"], mode="multi_inference",
                        sampler=sampler_settings(used["sampler"], "auto", device), k=used["k"],
                        max_slices=STUDY["evaluation"]["max_slices"], seed=STUDY["seed"], device=device,
                        out="one/multi_inference.npz")
        sample_run(SampleRunJob(job, load_label_map("amos15"), "one/multi_inference.png", "one/reconstruction.npz",
                                "one/reconstruction.png"))
    finally:
        torch.set_num_threads(threads)
    for name in ("multi_inference", "reconstruction"):
        two, one = (read_generation(f"{folder}/{name}.npz") for folder in ("results/samples/mri_axial", "one"))
        info = [dict(two.pop("info")), dict(one.pop("info"))]
        assert [i.pop("taken_from", None) for i in info] in ([None, None], ["results/samples/mri_axial/multi_inference.npz",
                                                                            "one/multi_inference.npz"])
        assert info[0] == info[1] and list(two) == list(one)
        assert all(np.array_equal(two[key], one[key]) and two[key].dtype == one[key].dtype for key in two), name


def _checkpoint_step(path: Path) -> int:
    try:
        return int(load_file(path, CHECKPOINT_FORMAT, "diffusion")["step"])
    except Exception:  # not written yet (or being replaced)
        return -1


def _training_jobs(cluster) -> dict[str, str]:
    """Slurm job id -> state of the training jobs slurmctld knows."""
    return {j["JobID"]: j["State"] for j in cluster.jobs() if "train_diffusion" in j["Comment"]}


def _resumed_steps(workdir: Path, slurm_id: str) -> list[int]:
    log = workdir / ".snakemake/slurm_logs/rule_train_diffusion/mri_axial" / f"{slurm_id}.log"
    # a job killed at its time limit can end its log in the middle of a progress bar's multi-byte character
    return [int(s) for s in re.findall(r"resumed from \S+ at step (\d+)", log.read_text(errors="replace"))]


def test_cancelled_or_timed_out_training_resumes_to_the_same_model(cluster, tmp_path):
    """Three runs side by side, from the same slices: uninterrupted (local), cancelled with scancel
    halfway, and one with a one-minute time limit. The profile's retries resubmit the killed
    jobs, which resume from their last checkpoint and end with the uninterrupted run's model."""
    steps = LONG["diffusion"]["train"]["steps"]
    snakemake(tmp_path / "data", LONG, *DATA)
    for name in ("reference", "cancelled", "timed_out"):
        shutil.copytree(tmp_path / "data", tmp_path / name, symlinks=True)

    def cancel_halfway():
        workdir = tmp_path / "cancelled"
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if _checkpoint_step(workdir / CHECKPOINT) >= steps // 2:
                break
            time.sleep(0.2)
        running = [i for i, state in _training_jobs_of(workdir).items() if state == "RUNNING"]
        assert running, "no running training job to cancel"
        subprocess.run(["scancel", running[0]], env=cluster.env, check=True)
        return running[0]

    def _training_jobs_of(workdir):
        ids = {p.stem for p in (workdir / ".snakemake/slurm_logs/rule_train_diffusion").rglob("*.log")}
        return {i: s for i, s in _training_jobs(cluster).items() if i in ids}

    runs = concurrently(
        reference=lambda: snakemake(tmp_path / "reference", LONG, MODEL),
        cancelled=lambda: slurm_snakemake(cluster, tmp_path / "cancelled", LONG, MODEL),
        timed_out=lambda: slurm_snakemake(cluster, tmp_path / "timed_out", LONG, MODEL, "--retries", "5",
                                          "--set-resources", "train_diffusion:runtime=1"),
        cancel=cancel_halfway,
    )
    reference = load_diffusion(tmp_path / "reference" / MODEL)[0].state_dict()
    for name, killed_state in (("cancelled", "CANCELLED"), ("timed_out", "TIMEOUT")):
        workdir, proc = tmp_path / name, runs[name]
        assert_ok(proc, cluster)
        attempts = sorted(_training_jobs_of(workdir).items(), key=lambda item: int(item[0]))
        states = [state for _, state in attempts]
        assert states[-1] == "COMPLETED" and len(states) >= 2 and set(states[:-1]) == {killed_state}, (name, attempts)
        if name == "cancelled":
            assert attempts[0][0] == runs["cancel"]
        resumed = [_resumed_steps(workdir, i) for i, _ in attempts[1:]]
        # each retry resumed, none restarted (one killed after its last step, while ending, resumes at the end)
        assert all(r and 0 < r[0] <= steps for r in resumed), (name, resumed)
        if name == "cancelled":
            assert resumed[0][0] >= steps // 2
        model = load_diffusion(workdir / MODEL)[0].state_dict()
        assert all(torch.equal(model[k], reference[k]) for k in model), name
        assert len(pd.read_csv(workdir / "results/models/diffusion/mri_axial_loss.csv")) == steps
        print(f"{name}: Slurm states {states}, resumed at steps {[r[0] for r in resumed]}")


def planned_jobs(*args: str, env: dict | None = None) -> list[dict]:
    """The jobs `snakemake --profile slurm -n` plans from the repository root: rule, threads and resources."""
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--profile", "slurm", *args], cwd=REPO,
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", proc.stdout):
        rule = re.match(r"(?:local)?rule (\w+):", block)
        resources = re.search(r"^\s+resources: (.*)$", block, re.M)
        if rule and resources:
            threads = re.search(r"^\s+threads: (\d+)$", block, re.M)
            values = dict(item.split("=", 1) for item in resources.group(1).split(", "))
            jobs.append({"rule": rule.group(1), "threads": int(threads.group(1)) if threads else 1, **values})
    return jobs


GPU_RULES = {"train_diffusion", "train_segmentor", "sample_diffusion", "sample_multimodal", "evaluate"}


def test_profile_plans_the_study_with_gpu_requests_on_the_gpu_rules():
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    compute = {**config["compute"], **yaml.safe_load((REPO / "slurm/compute.yaml").read_text())["compute"]}
    env = {**os.environ, "SBATCH_PARTITION": "gpu-a100", "SBATCH_ACCOUNT": "lab42", "SEGDIFF_GPU_MODEL": "a100",
           "SEGDIFF_SLURM_EXTRA": "--qos=normal --constraint=ib"}
    jobs = planned_jobs(env=env)
    assert {j["rule"] for j in jobs} >= GPU_RULES | {"slice_case", "manifest", "table"}
    for job in jobs:
        assert job.get("gpu") == ("1" if job["rule"] in GPU_RULES else None), job
        # site settings come from the environment, with no site name in the repository
        assert (job["slurm_partition"], job["slurm_account"], job["gpu_model"]) == ("gpu-a100", "lab42", "a100"), job
        assert job["slurm_extra"] == "--qos=normal --constraint=ib"
    train = next(j for j in jobs if j["rule"] == "train_diffusion")
    assert train["threads"] == compute["train_threads"] and train["runtime"] == str(compute["train_runtime_min"])
    # memory follows the config: the process plus the loader's batches in flight and its workers
    assert train["mem_mb"] == str(train_mem_mb(compute["train_mem_mb"], config["diffusion"]["train"]["batch_size"],
                                               config["preprocess"]["image_size"], compute["loader_workers"],
                                               compute["prefetch"]))
    # without the variables: no partition (the cluster's default), no account, any GPU
    bare = planned_jobs(env={k: v for k, v in os.environ.items() if not k.startswith(("SBATCH_", "SEGDIFF_"))})
    assert not any({"slurm_partition", "slurm_account", "gpu_model", "slurm_extra"} & set(j) for j in bare)


def test_profile_plans_data_parallel_training_with_n_gpus(tmp_path):
    """compute.gpus: 4 -> each training job asks for 4 GPUs, 4 x the threads and 4 processes' memory
    (each holds a quarter of the global batch); sampling and evaluation jobs keep one GPU each."""
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    compute = {**config["compute"], **yaml.safe_load((REPO / "slurm/compute.yaml").read_text())["compute"], "gpus": 4}
    (tmp_path / "four.yaml").write_text(yaml.safe_dump({"compute": {"gpus": 4}}))
    jobs = planned_jobs("--configfiles", "config/config.yaml", "slurm/compute.yaml", str(tmp_path / "four.yaml"))
    batch = config["diffusion"]["train"]["batch_size"]
    for job in jobs:
        if job["rule"] == "train_diffusion":
            assert job["gpu"] == "4" and job["threads"] == 4 * compute["train_threads"], job
            assert job["mem_mb"] == str(4 * train_mem_mb(compute["train_mem_mb"], batch // 4, config["preprocess"]["image_size"],
                                                         compute["loader_workers"], compute["prefetch"]))
        elif job["rule"] in GPU_RULES - {"train_diffusion", "train_segmentor"}:
            assert job["gpu"] == "1", job
