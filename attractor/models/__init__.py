"""Models: the Attractor LM and reasoner, and the baselines they are measured against."""
