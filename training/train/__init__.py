"""Trainers, one per method, sharing checkpoints and reporting."""
