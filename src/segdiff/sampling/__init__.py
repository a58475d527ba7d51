"""Generation from trained models: samplers, the reconstruction / multi-inference / multi-modal experiments,
chunk jobs and their merge."""

from segdiff._api import lazy_api

__getattr__, __dir__, __all__ = lazy_api(
    __name__,
    {
        "chunks": ["chunk_bounds", "largest_chunk", "scatter_item"],
        "experiments": [
            "MODES", "SampleJob", "SampleRunJob", "GatherJob", "run_generation", "read_generation",
            "first_column_title", "sample_run", "subset_index", "sample_chunk", "merge_chunks", "gather_run",
        ],
        "samplers": ["SamplerSettings", "sample_seed", "initial_noise", "stochastic_step", "generate"],
    },
)
