"""Where volumes come from: the embedded phantom, AMOS22 and weights downloads, a user's case sheet,
TotalVibeSegmentator masks, NIfTI io."""

from segdiff._api import lazy_api

__getattr__, __dir__, __all__ = lazy_api(
    __name__,
    {
        "casesheet": [
            "SPLITS", "read_case_sheet", "validate_case_sheet", "assign_splits", "sheet_from_amos",
            "write_case_sheet",
        ],
        "totalvibe": [
            "WEIGHTS_ENV", "DATASET_ID", "FETCH_HINT", "find_model", "model_labels", "label_disagreements",
            "segment_volume", "MaskInfo",
        ],
        "volumes": ["Volume", "load_nifti", "load_case"],
        "weights": [
            "WeightsUnavailable", "KnownWeights", "KNOWN_WEIGHTS", "FETCH_COMMAND", "url_file_name",
            "hub_weights_path", "find_weights", "fetch_weights", "fetch_known_weights", "read_state_dict",
        ],
    },
)
