"""Uniform random behaviour (the paper's Section 2.3 dataset uses it for both agents).

Random actions are a pure function of uniform noise in [0, 1): ``low + (high - low) * u``
for a Box, ``start + floor(n * u)`` for a Discrete space. The collector pre-draws that
noise per episode, so an episode does not depend on how many run side by side.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from madata.errors import SchemaError
from madata.spaces import Box, Discrete, Space


class RandomPolicy:
    """Uniform over one action space: integers for Discrete, uniform in low..high for Box."""

    level = "random"
    noise_dist = "uniform"

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

    def act(self, obs: np.ndarray, noise: np.ndarray | np.random.Generator) -> np.ndarray:
        """``obs`` [B, ...] (unused) -> actions [B] (int64, Discrete) or [B, *act_shape] (Box dtype).

        ``noise``: uniform [0, 1) of shape [B, *act_shape], or a generator to draw it from.
        """
        space = self.action_space
        if isinstance(noise, np.random.Generator):
            noise = noise.random((len(obs), *space.shape))
        u = np.asarray(noise, dtype=np.float64)
        if isinstance(space, Discrete):
            return space.start + np.minimum((u * space.n).astype(np.int64), space.n - 1)
        return (self._low + (self._high - self._low) * u).astype(space.dtype)

    def __repr__(self) -> str:
        return f"RandomPolicy({self.action_space})"


class TeamRandomPolicy:
    """Every agent uniform in its own action space, as one joint policy.

    ``act(state [B, S], noise [B, A]) -> [B, A]`` float32; agent ``i``'s part
    (``act_index[i]``) depends only on ``noise[:, act_index[i]]``.
    """

    level = "random"
    noise_dist = "uniform"

    def __init__(self, action_spaces: Mapping[str, Space], act_index: Mapping[str, np.ndarray], act_dim: int):
        self.parts = [(RandomPolicy(space), np.asarray(act_index[a])) for a, space in action_spaces.items()]
        self.act_dim = act_dim

    def act(self, state: np.ndarray | None, noise: np.ndarray) -> np.ndarray:
        noise = np.asarray(noise)
        out = np.empty((len(noise), self.act_dim), dtype=np.float32)
        for policy, idx in self.parts:
            u = noise[:, idx].reshape(len(noise), *policy.action_space.shape)
            out[:, idx] = policy.act(u, u).reshape(len(noise), -1)
        return out

    def describe(self) -> dict[str, str]:
        return {"kind": "random"}

    def __repr__(self) -> str:
        return f"TeamRandomPolicy({[p.action_space for p, _ in self.parts]})"
