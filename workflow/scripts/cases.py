import pandas as pd

from segdiff.sources.casesheet import write_case_sheet
from segdiff.pipeline.runtime import run_script

run_script(snakemake, lambda: write_case_sheet(pd.DataFrame(snakemake.params.cases), snakemake.output[0]))
