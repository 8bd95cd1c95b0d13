"""`python -m edgefit ...` runs the command-line interface, as the `edgefit` script does."""

from edgefit.cli import run

run()
