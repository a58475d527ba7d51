from segdiff.dataset import load_slices
from segdiff.evaluation import evaluate_run
from segdiff.labels import load_label_map
from segdiff.runtime import run_script
from segdiff.training import pick_device


def main():
    p, i = snakemake.params, snakemake.input
    evaluate_run(p.label, i.generation, i.segmentor, load_slices(i.reference, ["test"]), load_label_map(p.labels),
                 pick_device(p.device), snakemake.output.metrics.rsplit("/", 1)[0],
                 multi_inference=i.get("multi_inference", None), inception_weights=p.inception_weights)


run_script(snakemake, main)
