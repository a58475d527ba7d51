"""Generation from trained models: samplers, the reconstruction / multi-inference / multi-modal experiments, chunking."""

from segdiff.sampling.chunks import chunk_bounds, largest_chunk, scatter_item
from segdiff.sampling.experiments import MODES, run_generation, read_generation, sample_run, subset_index, sample_chunk, merge_chunks, gather_run
from segdiff.sampling.samplers import SamplerSettings, sample_seed, initial_noise, stochastic_step, generate

__all__ = ["chunk_bounds", "largest_chunk", "scatter_item", "MODES", "run_generation", "read_generation", "sample_run", "subset_index", "sample_chunk", "merge_chunks", "gather_run", "SamplerSettings", "sample_seed", "initial_noise", "stochastic_step", "generate"]
