"""From volumes to training data: slicing into views, shards, the slice store, loaders, in-memory slice sets, the phantom's oracle."""

from segdiff.data.dataset import SliceSet, stratified_subset
from segdiff.data.loader import Slices, LoaderSettings, loader_settings, StepBatches, BatchReader, step_loader
from segdiff.data.oracle import render_oracle, write_oracle, read_oracle, gather_oracle, case_oracle
from segdiff.data.shards import write_case_shards, read_shard, preview_indices, build_manifest, MANIFEST_COLUMNS
from segdiff.data.slicing import VIEWS, slice_views, Shard, normalise_ct, normalise_mri, normalise, view_stack, resize_stack, resize_chunks, ViewSlices, select_slices, slice_volume
from segdiff.data.store import write_store, write_subset, SliceStore, STORE_FILES

__all__ = ["SliceSet", "stratified_subset", "Slices", "LoaderSettings", "loader_settings", "StepBatches", "BatchReader", "step_loader", "render_oracle", "write_oracle", "read_oracle", "gather_oracle", "case_oracle", "write_case_shards", "read_shard", "preview_indices", "build_manifest", "MANIFEST_COLUMNS", "VIEWS", "slice_views", "Shard", "normalise_ct", "normalise_mri", "normalise", "view_stack", "resize_stack", "resize_chunks", "ViewSlices", "select_slices", "slice_volume", "write_store", "write_subset", "SliceStore", "STORE_FILES"]
