"""segdiff: segmentation-guided diffusion for medical images (CT/MRI), library behind the Snakemake workflow."""

__version__ = "0.1.0"
