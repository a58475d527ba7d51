"""A deterministic, seeded synthetic abdominal CT/MRI phantom written in AMOS22 layout."""

from segdiff._api import lazy_api

__getattr__, __dir__, __all__ = lazy_api(
    __name__,
    {
        "cohort": ["CT_OFFSET", "MRI_OFFSET", "case_number", "phantom_cases"],
        "render": ["DEFAULT_SHAPE", "DEFAULT_SPACING", "CT_AXCODES", "MRI_AXCODES", "generate_case", "mri_bias_field"],
        "tissues": ["MRI_MAX_LABEL", "TISSUES", "Tissue", "amos_labels"],
        "write": ["write_phantom_dataset"],
    },
)
