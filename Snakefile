# segdiff: segmentation-guided diffusion for CT and MRI.
#   snakemake --cores all                      the whole study on the embedded phantom
#   snakemake --cores all --forcerun results/models/diffusion/ct_axial.pt   retrain, resample, re-evaluate one run
#   snakemake --cores 2 --directory .test      the tiny study the tests run (.test/config/config.yaml), in minutes
# The keys to edit first: config/README.md. Runs, targets and resource requests: segdiff.pipeline.plan (PLAN).
# A changed setting reruns the jobs it shapes and no other (README, "What reruns when you change a setting").
# See docs/architecture.md for stages and file contracts.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/diffusion.smk"
include: "workflow/rules/evaluation.smk"
include: "workflow/rules/usefulness.smk"


onsuccess:
    # checkpoints stay until the workflow succeeds: a job killed after its last step resumes at the end
    import sys
    from segdiff.core.checkpoints import remove_finished  # (torch: imported only here, not at every parse)
    from segdiff.report.tables import quality_warnings

    remove_finished(PLAN.checkpoint_pairs())
    # runs that fail the oracle-free quality gate (segdiff.evaluation.quality): one WARNING line per flag
    for line in quality_warnings(PLAN.metrics_files()):
        print(line, file=sys.stderr)


rule all:
    default_target: True
    input:
        PLAN.all_outputs(),
