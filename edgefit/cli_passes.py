"""CLI commands for the optimisation passes (registered on edgefit.cli.app)."""
