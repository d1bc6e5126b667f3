"""A case: one point of a sweep, the shape parameters a technique is run at."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

Value = int | float | bool | str


@dataclass(frozen=True)
class Case:
    """Shape parameters in declaration order, e.g. B=4, H=16, N=4096, D=128, causal=True."""

    params: tuple[tuple[str, Value], ...]

    @classmethod
    def of(cls, **params: Value) -> Case:
        return cls(tuple(params.items()))

    @classmethod
    def from_mapping(cls, params: Mapping[str, Value]) -> Case:
        return cls(tuple(params.items()))

    def __getitem__(self, name: str) -> Value:
        for key, value in self.params:
            if key == name:
                return value
        raise KeyError(f"case {self.id} has no parameter {name!r}")

    def get(self, name: str, default: Any = None) -> Any:
        return dict(self.params).get(name, default)

    def keys(self) -> Iterator[str]:
        return (key for key, _ in self.params)

    def as_dict(self) -> dict[str, Value]:
        return dict(self.params)

    @property
    def id(self) -> str:
        """Stable, human-readable key: 'B=4,H=16,N=4096,D=128,causal=true'."""
        return ",".join(f"{key}={format_value(value)}" for key, value in self.params)

    def to_json(self) -> str:
        return json.dumps(self.as_dict())

    @classmethod
    def from_json(cls, text: str) -> Case:
        return cls.from_mapping(json.loads(text))


def format_value(value: Value) -> str:
    """How a parameter value is written in case ids and --case filters: true/false for booleans."""
    return str(value).lower() if isinstance(value, bool) else str(value)
