"""Evaluation (layer 6): language-model metrics, depth sweeps, puzzle metrics, loading an
exported model with its data, results on disk, plots and the lm-eval adapter."""
