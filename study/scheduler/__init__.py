"""Execution backends: local slot pool (default), Ray, Slurm."""
