"""The workflow's library side: config validation, rule params, run planning and resource requests,
job objects built from a Snakemake job, the script runtime."""

from segdiff._api import lazy_api

__getattr__, __dir__, __all__ = lazy_api(
    __name__,
    {
        "config": ["validate_config", "load_config", "parse_run", "coerce_strings"],
        "job_memory": [
            "GATHER_MEM_MB", "train_mem_mb", "sample_mem_mb", "evaluate_mem_mb", "slices_bound",
            "cpu_activations_mb",
        ],
        "job_params": [
            "SPEED_KEYS", "MODALITY_KEYS", "diffusion_params", "preprocess_params", "segmentor_params",
            "sampling_params", "recorded_config", "speed_settings",
        ],
        "jobs": [
            "sampler_settings", "sample_job", "gather_job", "evaluation_job", "oracle_job",
            "diffusion_train_job", "segmentor_train_job", "slice_case_job", "evaluation_figures_job",
        ],
        "plan": ["StudyPlan", "MODALITIES_BEFORE_DOWNLOAD", "TEST_CASES_BEFORE_DOWNLOAD"],
        "runtime": ["run_script"],
    },
)
