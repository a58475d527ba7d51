"""Foundations every stage shares: errors, atomic writes, label maps, model and checkpoint files, devices,
data-parallel ranks, provenance."""

from segdiff._api import lazy_api

__getattr__, __dir__, __all__ = lazy_api(
    __name__,
    {
        "atomic": ["atomic_path", "atomic_dir"],
        "checkpoints": [
            "save_file", "load_file", "read_torch_file", "remove_finished", "MODEL_FORMAT",
            "CHECKPOINT_FORMAT",
        ],
        "device": ["pick_device", "native_bf16", "use_bf16"],
        "distributed": [
            "Rank", "current_rank", "job_world_size", "local_batch_size", "under_torchrun", "should_launch",
            "is_main_process", "launch", "TIMEOUT",
        ],
        "errors": ["SegdiffError", "InputError", "ConfigError", "WeightsUnavailable"],
        "labels": ["LabelMap", "Remap", "load_label_map", "load_remap", "builtin_table"],
        "provenance": ["PACKAGES", "collect_provenance", "write_provenance"],
    },
)
