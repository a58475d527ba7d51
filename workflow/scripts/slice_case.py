import logging
from pathlib import Path

from segdiff.core.labels import load_label_map, load_remap
from segdiff.pipeline.runtime import run_script
from segdiff.data.shards import write_case_shards
from segdiff.sources.volumes import load_case


def main():
    p = snakemake.params
    labels = load_label_map(p.labels)
    remap = load_remap(p.remap, labels) if p.remap else None
    volume = load_case(snakemake.input.image, snakemake.input.label, labels, remap)
    pre = p.preprocess
    views = [Path(shard).parent.name for shard in snakemake.output.shards]  # results/slices/{modality}/{view}/{case}.npz
    counts = write_case_shards(
        volume, snakemake.wildcards.modality,
        dict(zip(views, snakemake.output.shards)), dict(zip(views, snakemake.output.previews)),
        image_size=pre["image_size"], min_foreground=pre["min_foreground"], ct_window=pre.get("ct_window"),
        mri_percentiles=pre.get("mri_percentiles"), previews_per_case=pre["previews_per_case"],  # one of the two: this modality's
    )
    logging.getLogger("segdiff").info("%s: slices per view %s (spacing %s mm)", snakemake.wildcards.case, counts, volume.spacing)


run_script(snakemake, main)
