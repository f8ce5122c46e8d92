"""``microexp evaluate RUN_DIR``: recompute metrics.json and plots from predictions.csv."""

from microexp.cli.train import add_evaluate_parser as add_parser
from microexp.cli.train import run_evaluate as run

__all__ = ["add_parser", "run"]
