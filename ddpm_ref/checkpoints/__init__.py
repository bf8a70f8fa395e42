"""Checkpoints shipped with ddpm_ref; load them by name with ddpm_ref.load_checkpoint("mnist")."""
