"""Observation and action spaces as plain, JSON-serializable value objects.

They mirror gymnasium's ``Box`` and ``Discrete`` but carry no sampling state, so a
dataset's spaces round-trip through its metadata exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from madata.errors import SchemaError

_FLOAT_DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class Box:
    """A box of real vectors: ``shape``, element-wise ``low``/``high`` bounds, and a float dtype."""

    shape: tuple[int, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    dtype: str = "float32"

    @classmethod
    def make(cls, low, high, shape=None, dtype: str = "float32") -> Box:
        """Build a Box from scalars or arrays (broadcast to ``shape``)."""
        if shape is None:
            shape = np.shape(low) if np.ndim(low) else np.shape(high)
        shape = tuple(int(s) for s in shape)
        lo = np.broadcast_to(np.asarray(low, dtype=np.float64), shape).ravel()
        hi = np.broadcast_to(np.asarray(high, dtype=np.float64), shape).ravel()
        return cls(shape, tuple(lo.tolist()), tuple(hi.tolist()), str(np.dtype(dtype)))

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return self.shape

    def to_json(self) -> dict[str, Any]:
        # inf is not JSON: store it as a string, parse it back below
        def enc(v):
            return [x if np.isfinite(x) else str(x) for x in v]

        return {
            "type": "box",
            "shape": list(self.shape),
            "low": enc(self.low),
            "high": enc(self.high),
            "dtype": self.dtype,
        }


@dataclass(frozen=True)
class Discrete:
    """``n`` actions numbered ``start .. start + n - 1``; stored as one int64 per step."""

    n: int
    start: int = 0

    @property
    def shape(self) -> tuple[int, ...]:
        return ()

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return ()

    @property
    def dtype(self) -> str:
        return "int64"

    def to_json(self) -> dict[str, Any]:
        return {"type": "discrete", "n": self.n, "start": self.start}


Space = Box | Discrete


def _ints(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        raise SchemaError(f"{where}: expected a list of non-negative integers, got {value!r}")
    return tuple(value)


def _bounds(value: Any, size: int, where: str) -> tuple[float, ...]:
    """A bound list: numbers, or "inf" / "-inf" (JSON has no infinity)."""
    if not isinstance(value, list) or len(value) != size:
        raise SchemaError(f"{where}: expected a list of {size} numbers, got {value!r}"[:300])
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            raise SchemaError(f"{where}: expected numbers or 'inf'/'-inf', got {v!r}")
        try:
            x = float(v)
        except ValueError:
            raise SchemaError(f"{where}: expected numbers or 'inf'/'-inf', got {v!r}") from None
        if np.isnan(x) or (isinstance(v, str) and np.isfinite(x)):
            raise SchemaError(f"{where}: expected numbers or 'inf'/'-inf', got {v!r}")
        out.append(x)
    return tuple(out)


def parse_space(obj: Any, where: str) -> Space:
    """Parse a space from its JSON form, with its invariants (shapes, low <= high, n >= 1); ``where``
    names the field in error messages."""
    if not isinstance(obj, dict) or "type" not in obj:
        raise SchemaError(f"{where}: expected a space object with a 'type', got {obj!r}")
    kind = obj["type"]
    if kind == "box":
        if not {"shape", "low", "high"} <= set(obj):
            raise SchemaError(f"{where}: a box needs shape, low and high, got {sorted(obj)}")
        shape = _ints(obj["shape"], f"{where}.shape")
        dtype = obj.get("dtype", "float32")
        if dtype not in _FLOAT_DTYPES:
            raise SchemaError(f"{where}: box dtype must be one of {_FLOAT_DTYPES}, got {dtype!r}")
        size = int(np.prod(shape, dtype=np.int64))
        low, high = _bounds(obj["low"], size, f"{where}.low"), _bounds(obj["high"], size, f"{where}.high")
        bad = [i for i, (lo, hi) in enumerate(zip(low, high, strict=True)) if lo > hi]
        if bad:
            raise SchemaError(f"{where}: low > high at components {bad[:5]}")
        return Box(shape, low, high, dtype)
    if kind == "discrete":
        n, start = obj.get("n"), obj.get("start", 0)
        for name, v, low in (("n", n, 1), ("start", start, None)):
            if isinstance(v, bool) or not isinstance(v, int) or (low is not None and v < low):
                raise SchemaError(
                    f"{where}.{name}: expected an integer{'' if low is None else f' >= {low}'}, got {v!r}"
                )
        return Discrete(n, start)
    raise SchemaError(f"{where}: unknown space type {kind!r}; expected 'box' or 'discrete'")


def from_gymnasium(space: Any, dtype: str | None = None) -> Space:
    """Convert a gymnasium ``Box``/``Discrete`` space (``dtype`` overrides a Box's dtype)."""
    name = type(space).__name__
    if name == "Box":
        dt = dtype or ("float64" if space.dtype == np.float64 else "float32")
        return Box.make(space.low, space.high, space.shape, dt)
    if name == "Discrete":
        return Discrete(int(space.n), int(space.start))
    raise SchemaError(f"unsupported gymnasium space {name}; madata stores Box and Discrete spaces")
