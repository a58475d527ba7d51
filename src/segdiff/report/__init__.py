"""What a study reports: figures and tables."""

from segdiff._api import lazy_api

__getattr__, __dir__, __all__ = lazy_api(
    __name__,
    {
        "figures": [
            "ORIGINAL", "label_colormap", "show_overlay", "slice_preview_figure", "loss_curve_figure",
            "loss_panels_figure", "generation_grid_figure", "generations_panel_figure",
            "oracle_vs_generated_figure", "dice_per_organ_figure", "metrics_by_run_figure",
        ],
        "tables": [
            "ROWS", "QUALITY_ROW", "run_label", "flag_name", "quality_cell", "build_tables", "table_notes",
            "quality_warnings", "write_tables",
        ],
    },
)
