"""The workflow's library side: config validation, job params, memory requests, run planning, script runtime."""

from segdiff.pipeline.config import validate_config, load_config, parse_run, coerce_strings
from segdiff.pipeline.job_memory import train_mem_mb, sample_mem_mb, evaluate_mem_mb, slices_bound, cpu_activations_mb
from segdiff.pipeline.job_params import SPEED_KEYS, MODALITY_KEYS, diffusion_params, preprocess_params, segmentor_params, sampling_params, recorded_config, speed_settings
from segdiff.pipeline.runtime import run_script

__all__ = ["validate_config", "load_config", "parse_run", "coerce_strings", "train_mem_mb", "sample_mem_mb", "evaluate_mem_mb", "slices_bound", "cpu_activations_mb", "SPEED_KEYS", "MODALITY_KEYS", "diffusion_params", "preprocess_params", "segmentor_params", "sampling_params", "recorded_config", "speed_settings", "run_script"]
