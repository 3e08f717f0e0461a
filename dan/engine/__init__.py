"""Training machinery: config-driven trainer pieces, checkpoints, evaluation, distributed set-up, commands."""
