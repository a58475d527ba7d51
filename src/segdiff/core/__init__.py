"""Shared foundations every stage uses: errors, atomic writes, label maps, checkpoints files, devices, ranks, provenance."""

from segdiff.core.checkpoints import save_file, load_file, read_torch_file, remove_finished, MODEL_FORMAT, CHECKPOINT_FORMAT
from segdiff.core.device import pick_device, native_bf16, use_bf16
from segdiff.core.distributed import Rank, current_rank, job_world_size, local_batch_size, under_torchrun, should_launch, is_main_process, launch, TIMEOUT
from segdiff.core.labels import LabelMap, Remap, load_label_map, load_remap, builtin_table
from segdiff.core.provenance import PACKAGES, collect_provenance, write_provenance

__all__ = ["save_file", "load_file", "read_torch_file", "remove_finished", "MODEL_FORMAT", "CHECKPOINT_FORMAT", "pick_device", "native_bf16", "use_bf16", "Rank", "current_rank", "job_world_size", "local_batch_size", "under_torchrun", "should_launch", "is_main_process", "launch", "TIMEOUT", "LabelMap", "Remap", "load_label_map", "load_remap", "builtin_table", "PACKAGES", "collect_provenance", "write_provenance"]
