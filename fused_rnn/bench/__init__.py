"""The benchmark suite behind `fused-rnn bench` (suite.py: grid, providers, timing;
report.py: table, JSON, plot)."""
from .report import geomean, option_costs, option_table, plot, speedups, table, write_json
from .suite import Suite, default_suite, run_suite

__all__ = ["Suite", "default_suite", "run_suite", "table", "write_json", "plot", "speedups",
           "geomean", "option_costs", "option_table"]
