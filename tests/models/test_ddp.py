"""Data-parallel training: two gloo ranks on the CPU compute what one process computes on the global
batch, each rank reads only its share, rank 0 alone writes checkpoints, a killed job resumes, a
failing rank fails the job in the parent.

Every rank is a fresh Python process (seconds to import torch and MONAI on two cores): the module
starts two jobs of two ranks in all and shares them between the tests through one fixture.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.losses import DiceCELoss
from tiny import TINY, tiny_slices

import segdiff.models.training as training
from segdiff.data.dataset import SliceSet
from segdiff.models.diffusion import DenoiserConfig, SchedulerConfig, fit_diffusion
from segdiff.core.distributed import (Rank, current_rank, is_main_process, job_world_size, launch, local_batch_size, should_launch,
                                 under_torchrun)
from segdiff.data.loader import StepBatches, step_loader
from segdiff.models.segmentor import SegmentorConfig, batch_dice_ce, fit_segmentor
from segdiff.models.training import TrainSettings

CPU = torch.device("cpu")
DENOISER = DenoiserConfig(**TINY, use_flash_attention=False)
SCHED = SchedulerConfig(num_train_timesteps=50, prediction_type="sample")
SEGMENTOR = SegmentorConfig(num_classes=4, channels=(8, 16, 32), strides=(2, 2), num_res_units=1)
#: fp32 (bf16 autocast would swamp the comparison); a checkpoint every 2 steps; ablation and augmentation on
SETTINGS = TrainSettings(steps=6, lr=1e-3, warmup_steps=2, checkpoint_every=2, seed=3, ema_decay=0.9, bf16=False)
BATCH = 8  # the global batch: 4 slices per rank
ABLATION = 0.5
KILL_RANK, KILL_AT = 1, 5  # rank 1 dies after step 5: the last checkpoint is step 4's
JOB_TIMEOUT = timedelta(seconds=60)  # a collective waiting for a dead rank fails after this (no hang)

# Tolerances, measured on 2 CPU cores (torch 2.14, gloo, one thread per process) with the models above:
# - the loss of each step, relative: the two ranks' mean loss differs from one process's by at
#   most 9.6e-8 (diffusion) and 1.1e-7 (segmentor): float32 rounding of the per-rank means and of
#   DDP's gradient all-reduce. Tolerance 1e-5, ~100x. A wrong sharding deviates by far more
#   (largest deviation over the 6 steps; the first step of the diffusion model is blind to it, its
#   zero-initialised output layer predicting 0 whatever the noise):
#     each rank drawing its own noise / timesteps / ablation / augmentation for its 4 rows instead
#     of keeping its rows of the global draw: 4.0e-3 (diffusion), 1.5e-2 (segmentor);
#     each rank reading the whole global batch: 2.6e-3 (diffusion), 3.6e-3 (segmentor);
#     a per-rank batch Dice instead of the global batch's: 9.0e-4 (segmentor; 1.6e-5 at step 1).
LOSS_RTOL = 1e-5
# - the diffusion EMA weights (up to 1.0): max |difference| 3.0e-8. Tolerance 3e-6 (~100x); the
#   wrong shardings above move them by 1.7e-3 (own noise) and 2.0e-3 (whole batch).
WEIGHT_ATOL = 3e-6
# - the segmentor: the biases of the convolutions followed by instance norm have a zero gradient
#   in exact arithmetic, so AdamW turns gradient noise of 1e-10 into steps of ~lr: they differ by
#   up to 1e-3 between any two summation orders, without any effect on the network's output.
#   Compared instead: the EMA network's logits (up to 6.0) on fixed images, max |difference|
#   1.9e-6. Tolerance 2e-4 (~100x); own augmentation per rank: 0.83, whole batch: 0.43,
#   per-rank Dice: 5.6e-3.
LOGIT_ATOL = 2e-4


class RecordingSlices:
    """Slices that log, per rank, the index arrays the loader reads (one line per read)."""

    def __init__(self, slices: SliceSet, folder: Path):
        self.slices, self.folder = slices, folder

    def __len__(self) -> int:
        return len(self.slices)

    def read(self, index: np.ndarray):
        with open(self.folder / f"reads-rank{os.environ.get('RANK', 0)}.txt", "a") as log:
            log.write(" ".join(map(str, index.tolist())) + "\n")
        return self.slices.read(index)

    def fingerprint(self) -> str:
        return self.slices.fingerprint()


def read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def read_log(path: Path) -> list[list[int]]:
    return [[int(i) for i in line.split()] for line in read_lines(path)]


def fit_both(slices, folder: Path, world_size: int):
    """Diffusion then segmentor, checkpoints in ``folder``; the segmentor reads the first 8 slices."""
    diffusion = fit_diffusion(slices, DENOISER, SCHED, SETTINGS, BATCH, folder / "diffusion.ckpt", CPU, ablation_p=ABLATION,
                              world_size=world_size)
    segmentor = fit_segmentor(tiny_slices(8), SEGMENTOR, SETTINGS, BATCH, folder / "segmentor.ckpt", CPU, world_size=world_size)
    return diffusion, segmentor


def rank_job(slices: RecordingSlices, root: Path) -> None:
    """What every rank of the test job runs: :func:`fit_both` in ``root/ddp`` (each rank keeps its
    results there), then a diffusion job in ``root/killed`` that rank 1 leaves after step 5.
    Each rank logs the checkpoints it writes."""
    rank = current_rank()
    save = training.save_file

    def logged_save(path, payload, *args):
        with open(Path(path).parent / f"writes-rank{rank.rank}.txt", "a") as log:
            log.write(f"{Path(path).name} {payload['step']}\n")
        save(path, payload, *args)

    def kill_hook(step: int) -> None:
        if rank.rank == KILL_RANK and step == KILL_AT:
            (root / "killed" / "killed-at").write_text(repr(time.time()))
            raise RuntimeError(f"killed at step {step}")

    training.save_file = logged_save
    diffusion, segmentor = fit_both(slices, root / "ddp", world_size=2)
    torch.save({"diffusion": diffusion, "segmentor": segmentor}, root / "ddp" / f"result-rank{rank.rank}.pt")
    training._after_step = kill_hook
    fit_diffusion(slices.slices, DENOISER, SCHED, SETTINGS, BATCH, root / "killed" / "diffusion.ckpt", CPU, ablation_p=ABLATION,
                  world_size=2)  # rank 1 raises, rank 0 waits for it in step 6 until stopped


def resume_job(slices: RecordingSlices, root: Path) -> None:
    """What every rank of the resuming job runs: rank 1 sees no checkpoint file at all (as a node whose
    view of a network file system lags), yet resumes the killed job with rank 0; then the two ranks
    meet the final checkpoint of the single process (``root/foreign``), which they must not resume."""
    rank = current_rank()
    if rank.rank == 1:
        exists, is_file = Path.exists, Path.is_file
        Path.exists = lambda self, *a, **k: self.suffix != ".ckpt" and exists(self, *a, **k)
        Path.is_file = lambda self, *a, **k: self.suffix != ".ckpt" and is_file(self, *a, **k)
    resumed = fit_diffusion(slices, DENOISER, SCHED, SETTINGS, BATCH, root / "killed" / "diffusion.ckpt", CPU,
                            ablation_p=ABLATION, world_size=2)
    foreign = fit_diffusion(slices.slices, DENOISER, SCHED, SETTINGS, BATCH, root / "foreign" / "diffusion.ckpt", CPU,
                            ablation_p=ABLATION, world_size=2)
    torch.save({"resumed": resumed, "foreign": foreign}, root / "killed" / f"resumed-rank{rank.rank}.pt")


def losses(result) -> np.ndarray:
    return np.array([row["loss"] for row in result.history])


def logits(model, images: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(torch.as_tensor(images).unsqueeze(1))


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    """One process (the reference); a two-rank job that trains both networks, then fails on rank 1;
    a two-rank job (started by ``fit_diffusion``) that resumes the failed one."""
    root = tmp_path_factory.mktemp("ddp")
    slices = tiny_slices(12)  # 12 slices, global batches of 8: the epochs wrap within a batch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the reference; the ranks get 1 thread each
    try:
        single = fit_both(slices, root / "single", world_size=1)
        (root / "ddp").mkdir()
        (root / "killed").mkdir()
        with pytest.raises(RuntimeError, match="killed at step 5") as killed:
            launch(rank_job, 2, CPU, RecordingSlices(slices, root / "ddp"), root, timeout=JOB_TIMEOUT)
        raised = time.time()
        checkpoint = torch.load(root / "killed" / "diffusion.ckpt", weights_only=True)
        shutil.copytree(root / "single", root / "foreign")  # the final checkpoint of one process
        launch(resume_job, 2, CPU, RecordingSlices(slices, root / "killed"), root, timeout=JOB_TIMEOUT)
    finally:
        torch.set_num_threads(threads)
    ranks = [torch.load(root / "ddp" / f"result-rank{r}.pt", weights_only=False) for r in (0, 1)]
    resumed = [torch.load(root / "killed" / f"resumed-rank{r}.pt", weights_only=False) for r in (0, 1)]
    return dict(root=root, slices=slices, single=single, ranks=ranks, killed=killed, raised=raised,
                killed_step=checkpoint["step"], resumed=resumed)


def test_two_ranks_compute_what_one_process_computes(jobs):
    single, ranks = jobs["single"], jobs["ranks"]
    for net, reference in zip(("diffusion", "segmentor"), single):
        ddp = ranks[0][net]
        assert [r["step"] for r in ddp.history] == list(range(1, SETTINGS.steps + 1))
        np.testing.assert_allclose(losses(ddp), losses(reference), rtol=LOSS_RTOL, atol=0, err_msg=net)
        assert [r["lr"] for r in ddp.history] == [r["lr"] for r in reference.history]  # the same schedule
        # both ranks end with the same weights and log the same (mean) loss
        assert losses(ranks[1][net]).tolist() == losses(ddp).tolist()
        for name, weight in ddp.ema.state_dict().items():
            assert torch.equal(ranks[1][net].ema.state_dict()[name], weight), (net, name)
    for name, weight in single[0].ema.state_dict().items():
        torch.testing.assert_close(ranks[0]["diffusion"].ema.state_dict()[name], weight, rtol=0, atol=WEIGHT_ATOL, msg=name)
    images = tiny_slices(4, seed=5).image
    torch.testing.assert_close(logits(ranks[0]["segmentor"].ema, images), logits(single[1].ema, images), rtol=0,
                               atol=LOGIT_ATOL)


def test_each_rank_reads_only_its_share_of_the_global_batch(jobs):
    folder, n = jobs["root"] / "ddp", len(jobs["slices"])
    reads = [read_log(folder / f"reads-rank{r}.txt") for r in (0, 1)]
    expected = list(StepBatches(n, BATCH, SETTINGS.seed, 0, SETTINGS.steps))
    assert len(reads[0]) == len(reads[1]) == SETTINGS.steps
    for step, (first, second, whole) in enumerate(zip(*reads, expected)):
        assert len(first) == len(second) == BATCH // 2, step
        assert first + second == whole.tolist(), step  # rank r reads positions r*4 .. r*4+3 of the global batch


def test_only_rank_0_writes_checkpoints(jobs):
    folder = jobs["root"] / "ddp"
    assert read_lines(folder / "writes-rank0.txt") == [f"{net}.ckpt {step}" for net in ("diffusion", "segmentor")
                                                        for step in (2, 4, 6)]
    assert not (folder / "writes-rank1.txt").exists()
    assert sorted(p.name for p in folder.iterdir() if p.suffix == ".ckpt") == ["diffusion.ckpt", "segmentor.ckpt"]


def test_a_failing_rank_fails_the_job_in_the_parent(jobs):
    error = jobs["killed"].value
    assert type(error) is RuntimeError and "raised on rank 1 of 2" in error.__notes__[0]
    assert "kill_hook" in error.__notes__[0]  # the rank's own traceback
    # rank 0, waiting for the dead rank in the all-reduce of step 6, was stopped at once: no hang
    # until the collective's timeout (JOB_TIMEOUT)
    assert jobs["raised"] - float((jobs["root"] / "killed" / "killed-at").read_text()) < 15
    folder = jobs["root"] / "killed"
    assert read_lines(folder / "writes-rank0.txt") == ["diffusion.ckpt 2", "diffusion.ckpt 4"]
    assert not (folder / "writes-rank1.txt").exists()


def test_a_killed_job_resumes_under_ddp_and_ends_as_the_uninterrupted_one(jobs):
    """Rank 1 saw no checkpoint file: rank 0's decision and state reached it, both resumed at step 4."""
    assert jobs["killed_step"] == 4
    reference = jobs["ranks"][0]["diffusion"]
    for rank, job in enumerate(jobs["resumed"]):
        resumed = job["resumed"]
        assert resumed.resumed_from == 4, rank
        assert losses(resumed).tolist() == losses(reference).tolist()
        for name, weight in reference.ema.state_dict().items():
            assert torch.equal(resumed.ema.state_dict()[name], weight), (rank, name)
    # the resumed ranks read steps 5 and 6 only, each its share
    folder = jobs["root"] / "killed"
    reads = [read_log(folder / f"reads-rank{r}.txt") for r in (0, 1)]
    expected = list(StepBatches(len(jobs["slices"]), BATCH, SETTINGS.seed, 4, SETTINGS.steps))
    assert [a + b for a, b in zip(*reads)] == [batch.tolist() for batch in expected]


def test_a_checkpoint_of_another_number_of_ranks_is_not_resumed(jobs):
    """The single process's final checkpoint (same settings and data, world size 1): two ranks train
    afresh, to the two-rank model."""
    reference = jobs["ranks"][0]["diffusion"]
    for rank, job in enumerate(jobs["resumed"]):
        foreign = job["foreign"]
        assert foreign.resumed_from == 0 and losses(foreign).tolist() == losses(reference).tolist(), rank
        for name, weight in reference.ema.state_dict().items():
            assert torch.equal(foreign.ema.state_dict()[name], weight), (rank, name)


def test_step_batches_of_the_ranks_partition_the_global_batch():
    for n, batch, world_size in ((12, 8, 2), (5, 6, 3), (96, 8, 4)):
        whole = list(StepBatches(n, batch, seed=5, start=0, stop=7))
        shares = [list(StepBatches(n, batch, seed=5, start=0, stop=7, rank=r, world_size=world_size)) for r in range(world_size)]
        for step, global_batch in enumerate(whole):
            parts = [share[step] for share in shares]
            assert all(len(p) == batch // world_size for p in parts)
            np.testing.assert_array_equal(np.concatenate(parts), global_batch)  # rank r: positions r*b .. (r+1)*b-1
            if n % batch == 0:  # a batch within one epoch: the ranks read disjoint slices
                assert len(set(np.concatenate(parts).tolist())) == batch
    images, masks = next(iter(step_loader(tiny_slices(12), 8, 5, 0, 1, rank=1, world_size=2)))
    assert images.shape == (4, 1, 16, 16) and masks.shape == (4, 16, 16)


def test_a_batch_the_ranks_cannot_share_is_refused(tmp_path):
    with pytest.raises(ValueError, match="batch_size 6 is not divisible by the world_size 4"):
        StepBatches(10, 6, seed=0, start=0, stop=1, rank=0, world_size=4)
    with pytest.raises(ValueError, match="batch_size 6 is not divisible by the world_size 4"):
        fit_diffusion(tiny_slices(), DENOISER, SCHED, SETTINGS, 6, tmp_path / "d.ckpt", CPU, world_size=4)
    with pytest.raises(ValueError, match="batch_size 9 is not divisible by the world_size 2"):
        fit_segmentor(tiny_slices(), SEGMENTOR, SETTINGS, 9, tmp_path / "s.ckpt", CPU, world_size=2)
    assert not list(tmp_path.iterdir())  # refused before any process started
    assert local_batch_size(8, 2) == 4 and local_batch_size(8, 1) == 8


def test_rank_description_and_world_size_of_a_job(monkeypatch):
    assert Rank() == Rank(0, 1, CPU) and not Rank().distributed and Rank().is_main
    assert Rank(1, 2, "cpu").rows(4) == slice(4, 8) and not Rank(1, 2).is_main
    for rank, world_size in ((2, 2), (-1, 2), (0, 0), (1, 1)):
        with pytest.raises(ValueError):
            Rank(rank, world_size)
    assert current_rank(CPU) == Rank()  # no process group: the single process
    value = torch.tensor(3.0)
    assert Rank().mean(value) is value and Rank().sum(value) is value and Rank().object_from_main(True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert job_world_size({"device": "auto", "gpus": 4}) == 4 and job_world_size({"device": "cuda", "gpus": 2}) == 2
    assert job_world_size({"device": "cpu", "gpus": 4}) == 1 and job_world_size({"device": "cuda", "gpus": 1}) == 1
    assert job_world_size({"device": "auto", "gpus": 0}) == 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert job_world_size({"device": "auto", "gpus": 4}) == 1


def test_batch_dice_ce_is_monais_loss_on_one_process():
    torch.manual_seed(0)
    x = torch.randn(6, 4, 16, 16, requires_grad=True)
    y = torch.randint(0, 4, (6, 1, 16, 16))
    ours, theirs = batch_dice_ce(x, y), DiceCELoss(to_onehot_y=True, softmax=True, batch=True)(x, y)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=0)
    torch.testing.assert_close(torch.autograd.grad(ours, x)[0], torch.autograd.grad(theirs, x)[0], rtol=0, atol=1e-8)


def test_under_torchrun_a_rank_joins_the_job_of_the_environment(tmp_path, monkeypatch, one_thread):
    """A process started by torchrun (here the only rank of a one-process job) trains in the job's
    process group, set up from the environment and torn down afterwards, instead of starting ranks."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = TrainSettings(steps=2, lr=1e-3, checkpoint_every=1, seed=3, bf16=False)
    plain = fit_diffusion(tiny_slices(), DENOISER, SCHED, settings, 4, tmp_path / "plain.ckpt", CPU)
    for name, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(name, value)
    assert under_torchrun() and should_launch(1) and is_main_process()
    joined = fit_diffusion(tiny_slices(), DENOISER, SCHED, settings, 4, tmp_path / "torchrun.ckpt", CPU)
    assert not torch.distributed.is_initialized()
    assert losses(joined).tolist() == losses(plain).tolist()
    monkeypatch.setenv("RANK", "1")
    assert not is_main_process()  # such a rank must not write results
