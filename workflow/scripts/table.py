import json
from pathlib import Path

from segdiff.runtime import run_script
from segdiff.tables import write_tables


def main():
    runs = [json.loads(Path(m).read_text()) for m in snakemake.input.metrics]
    notes = [f"FID n/a: {note}" for note in sorted({r["fid_note"] for r in runs if r["fid"] is None})]
    o = snakemake.output
    write_tables(snakemake.input.metrics, o.csv, o.md, o.tex, o.long, notes=notes)


run_script(snakemake, main)
