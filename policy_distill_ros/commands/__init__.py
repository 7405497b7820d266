"""Subcommands of `policy-distill` (see `policy_distill_ros.cli`): one module per command."""
