"""madata_algos: offline MARL algorithms that learn from madata datasets (CAST-BCQ and baselines)."""
