"""Evaluation: datasets, grading, the benchmark runner and its records, the report (statistics,
cost model, rendering, plots) and calibration. The graph never imports this package."""
