"""A deterministic, seeded synthetic abdominal CT/MRI phantom written in AMOS22 layout."""

from segdiff.sources.phantom.cohort import CT_OFFSET, MRI_OFFSET, case_number, phantom_cases
from segdiff.sources.phantom.render import CT_AXCODES, DEFAULT_SHAPE, DEFAULT_SPACING, MRI_AXCODES, generate_case, mri_bias_field
from segdiff.sources.phantom.tissues import MRI_MAX_LABEL, TISSUES, Tissue, amos_labels
from segdiff.sources.phantom.write import write_phantom_dataset

__all__ = [
    "CT_OFFSET",
    "MRI_OFFSET",
    "DEFAULT_SHAPE",
    "DEFAULT_SPACING",
    "CT_AXCODES",
    "MRI_AXCODES",
    "MRI_MAX_LABEL",
    "TISSUES",
    "Tissue",
    "amos_labels",
    "case_number",
    "phantom_cases",
    "generate_case",
    "mri_bias_field",
    "write_phantom_dataset",
]
