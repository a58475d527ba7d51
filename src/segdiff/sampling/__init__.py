"""Generation from trained models: samplers, the reconstruction / multi-inference / multi-modal experiments
and their chunk jobs; the generation files they write and the merge of chunk files (torch-free)."""

from segdiff._api import lazy_api

__getattr__, __dir__, __all__ = lazy_api(
    __name__,
    {
        "chunks": ["chunk_bounds", "largest_chunk", "scatter_item"],
        "experiments": ["SampleJob", "SampleRunJob", "run_generation", "sample_run", "subset_index", "sample_chunk"],
        "files": [
            "MODES", "GatherJob", "write_generation", "read_generation", "first_column_title", "draw_grids",
            "subset_digest", "merge_chunks", "gather_run",
        ],
        "samplers": ["SamplerSettings", "sample_seed", "initial_noise", "stochastic_step", "generate"],
    },
)
