"""madata_algos: offline MARL algorithms that learn from madata datasets (CAST-BCQ and baselines),
and the loaders they sample from (:mod:`madata_algos.loader`: ``TransitionLoader``, ``SequenceLoader``,
``StreamingLoader``), public for algorithms of your own."""
