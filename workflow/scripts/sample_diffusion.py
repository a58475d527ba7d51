from segdiff.dataset import load_slices
from segdiff.figures import generation_grid_figure
from segdiff.generation import run_generation
from segdiff.labels import load_label_map
from segdiff.runtime import run_script
from segdiff.sampling import SamplerSettings
from segdiff.training import pick_device


def main():
    p, w = snakemake.params, snakemake.wildcards
    mode = p.get("mode", None) or w.mode
    s = p.sampling
    settings = SamplerSettings(sampler=s["sampler"], steps=s["steps"], eta=s["eta"], batch_size=s["batch_size"])
    test = load_slices(snakemake.input.manifests, ["test"])
    out = run_generation(snakemake.input.model, test, mode, settings, p.seed, pick_device(p.device),
                         snakemake.output.samples, k=s["k"])
    original = None if mode == "multimodal" else out["original"]
    title = f"{mode.replace('_', '-')}: {w.get('source', w.modality)} masks -> {w.modality} model ({w.view})"
    generation_grid_figure(original, out["mask"], out["generated"], load_label_map(p.labels), snakemake.output.grid, title)


run_script(snakemake, main)
