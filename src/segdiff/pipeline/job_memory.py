"""Memory requests of the model jobs, from the config values their memory depends on.

Snakemake passes ``resources: mem_mb`` to the scheduler (``sbatch --mem`` under the SLURM
profile), so each request follows the data the job holds at once: the loader's batches in flight
for training, the ``evaluation.max_slices`` x k test subset for sampling and evaluation, and, for
jobs that run the network on the CPU, its activations (on a GPU they live in GPU memory). Each
formula is ``compute.<job>_mem_mb`` (the process: interpreter, torch, the model) plus those terms;
the terms are upper bounds, written out below.
"""

from __future__ import annotations

__all__ = ["GATHER_MEM_MB", "train_mem_mb", "sample_mem_mb", "evaluate_mem_mb", "slices_bound", "cpu_activations_mb"]

MB = 2**20
WORKER_MB = 400  # one DataLoader worker process (forked interpreter + torch pages it touches)
SLICES_PER_CASE_VIEW = 512  # without max_slices: a case gives at most one slice per voxel row (512 px CT)
#: the process of a gather job (numpy, torch imported, matplotlib; no model): its ``base_mb``
GATHER_MEM_MB = 1000


#: CPU activation bytes per pixel and per channel of the network's first level, per image in a batch
#: (measured on the default model, 256 px, bf16, flash attention: training 5.6 GB at batch 8 without
#: flash attention, sampling 45 MB per image; rounded up)
TRAIN_BYTES_PER_PIXEL_CHANNEL = 600
SAMPLE_BYTES_PER_PIXEL_CHANNEL = 64


def _pixels(image_size: int) -> int:
    return image_size * image_size


def cpu_activations_mb(batch_size: int, image_size: int, first_channels: int, training: bool) -> int:
    """Activations of the diffusion network on the CPU for one batch (0 when it runs on a GPU: pass 0 channels).

    Args:
        batch_size: images in the batch.
        image_size: side of the square slices in pixels.
        first_channels: width of the network's first level (0 on a GPU).
        training: training (activations kept for the backward pass) or sampling.

    Returns:
        Megabytes.
    """
    per = TRAIN_BYTES_PER_PIXEL_CHANNEL if training else SAMPLE_BYTES_PER_PIXEL_CHANNEL
    return int(batch_size * _pixels(image_size) * first_channels * per / MB + 0.5)


def train_mem_mb(base_mb: int, batch_size: int, image_size: int, workers: int, prefetch: int) -> int:
    """``base_mb`` + the batches in flight (each worker's prefetch queue, the one being trained on
    and its pinned copy; float32 image + uint8 mask per slice) + the worker processes.

    Args:
        base_mb: the training process without its data (``compute.train_mem_mb``).
        batch_size: slices per batch of this process.
        image_size: side of the square slices in pixels.
        workers: DataLoader worker processes (``compute.loader_workers``).
        prefetch: batches each worker reads ahead (``compute.prefetch``).

    Returns:
        Megabytes.
    """
    in_flight = max(1, workers) * prefetch + 2
    data = 2 * in_flight * batch_size * _pixels(image_size) * 5
    return int(base_mb + data / MB + WORKER_MB * workers + 0.5)


def slices_bound(max_slices: int, test_cases: int, views: int) -> int:
    """Test slices a sampling or evaluation job holds: ``max_slices``, or a bound of the whole test set.

    Args:
        max_slices: ``evaluation.max_slices`` (0 = the whole test set).
        test_cases: test cases of the modality.
        views: slice views of the run's model view.

    Returns:
        Slices.
    """
    return max_slices if max_slices > 0 else test_cases * views * SLICES_PER_CASE_VIEW


def sample_mem_mb(base_mb: int, n_slices: int, k: int, image_size: int) -> int:
    """``base_mb`` + generations (n x k), originals and masks, twice (the arrays and the file written).

    Args:
        base_mb: the process without its data (``compute.sample_mem_mb``; a gather job's ``GATHER_MEM_MB``).
        n_slices: test slices the job holds.
        k: generations per slice (``sampling.k``).
        image_size: side of the square slices in pixels.

    Returns:
        Megabytes.
    """
    return int(base_mb + 2 * n_slices * (4 * k + 5) * _pixels(image_size) / MB + 0.5)


def evaluate_mem_mb(base_mb: int, n_slices: int, k: int, image_size: int) -> int:
    """``base_mb`` + generated, oracle (k each), original, reference and their predictions, twice
    (the arrays and the compressed file written).

    Args:
        base_mb: the process without its data (``compute.sample_mem_mb``).
        n_slices: test slices the job holds.
        k: generations per slice (``sampling.k``).
        image_size: side of the square slices in pixels.

    Returns:
        Megabytes.
    """
    return int(base_mb + 2 * n_slices * (8 * k + 14) * _pixels(image_size) / MB + 0.5)
