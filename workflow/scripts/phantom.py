from pathlib import Path

from segdiff.sources.phantom import write_phantom_dataset
from segdiff.pipeline.runtime import run_script


def main():
    p = snakemake.params.phantom
    write_phantom_dataset(Path(snakemake.output.dataset).parent, p["n_ct"], p["n_mri"], tuple(p["shape"]), tuple(p["spacing"]),
                          snakemake.params.seed, p["val_fraction"])


run_script(snakemake, main)
