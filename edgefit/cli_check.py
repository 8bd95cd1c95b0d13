"""CLI commands for device profiles, check and gate (registered on edgefit.cli.app)."""
