"""From volumes to training data: the body envelope, slicing into views, shards, the slice store, loaders,
in-memory slice sets, the phantom's oracle renders."""

from segdiff._api import lazy_api

__getattr__, __dir__, __all__ = lazy_api(
    __name__,
    {
        "body": ["BODY_MODES", "BodySettings", "body_mask", "add_body", "normalise_with_body"],
        "dataset": ["SliceSet", "stratified_subset"],
        "jobs": ["SliceCaseJob", "slice_case"],
        "loader": ["Slices", "LoaderSettings", "loader_settings", "StepBatches", "BatchReader", "step_loader"],
        "oracle": ["OracleJob", "render_oracle", "write_oracle", "read_oracle", "gather_oracle", "case_oracle"],
        "shards": ["write_case_shards", "read_shard", "preview_indices", "build_manifest", "MANIFEST_COLUMNS"],
        "slicing": [
            "VIEWS", "slice_views", "Shard", "normalise_ct", "normalise_mri", "normalise", "view_stack",
            "resize_stack", "resize_chunks", "ViewSlices", "organ_pixels", "select_slices", "slice_volume",
        ],
        "store": ["write_store", "write_subset", "SliceStore", "STORE_FILES"],
    },
)
