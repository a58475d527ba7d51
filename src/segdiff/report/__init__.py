"""What a study reports: figures and tables."""

from segdiff.report.figures import label_colormap, show_overlay, slice_preview_figure, loss_curve_figure, loss_panels_figure, generation_grid_figure, generations_panel_figure, oracle_vs_generated_figure, dice_per_organ_figure, metrics_by_run_figure
from segdiff.report.tables import ROWS, run_label, build_tables, table_notes, write_tables

__all__ = ["label_colormap", "show_overlay", "slice_preview_figure", "loss_curve_figure", "loss_panels_figure", "generation_grid_figure", "generations_panel_figure", "oracle_vs_generated_figure", "dice_per_organ_figure", "metrics_by_run_figure", "ROWS", "run_label", "build_tables", "table_notes", "write_tables"]
