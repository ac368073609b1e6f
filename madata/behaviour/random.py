"""The uniform random behaviour policy (the paper's Section 2.3 dataset uses it for both agents)."""

from __future__ import annotations

import numpy as np

from madata.errors import SchemaError
from madata.spaces import Box, Discrete, Space


class RandomPolicy:
    """Uniform over one agent's action space: integers for Discrete, uniform in low..high for Box."""

    level = "random"

    def __init__(self, action_space: Space):
        if isinstance(action_space, Box):
            low = np.asarray(action_space.low, dtype=np.float64).reshape(action_space.shape)
            high = np.asarray(action_space.high, dtype=np.float64).reshape(action_space.shape)
            if not (np.isfinite(low).all() and np.isfinite(high).all()):
                raise SchemaError(
                    f"a random policy needs a bounded action space, got low={action_space.low} high={action_space.high}"
                )
            self._low, self._high = low, high
        elif not isinstance(action_space, Discrete):
            raise SchemaError(
                f"a random policy needs a Box or Discrete action space, got {type(action_space).__name__}"
            )
        self.action_space = action_space

    def act(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``obs`` [B, *obs_shape] -> actions [B] (int64, Discrete) or [B, *act_shape] (Box dtype)."""
        batch = len(obs)
        space = self.action_space
        if isinstance(space, Discrete):
            return rng.integers(space.start, space.start + space.n, size=batch, dtype=np.int64)
        return rng.uniform(self._low, self._high, size=(batch, *space.shape)).astype(space.dtype)

    def __repr__(self) -> str:
        return f"RandomPolicy({self.action_space})"
