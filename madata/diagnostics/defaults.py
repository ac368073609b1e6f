"""The defaults of ``madata diagnose`` (read by the CLI's --help without loading the statistics)."""

DEFAULTS = {"groups": 2048, "group_size": 64, "permutations": 20, "pool": 500_000, "bins": 4, "shuffles": 3, "seed": 0}
