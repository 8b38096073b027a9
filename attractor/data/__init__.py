"""Datasets (layer 4): text corpora, token shards, Sudoku and maze puzzles, splits, samplers."""
