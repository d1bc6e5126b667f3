"""Helpers shared by the harness tests."""

from __future__ import annotations


def fake_suite(n_values=(64,), dtypes=("float32",), directions=("fwd",), seeds=2, extra_groups: str = "") -> str:
    """TOML of a suite with one group of the fake technique."""

    def toml_list(values):
        return "[" + ", ".join(f'"{v}"' if isinstance(v, str) else str(v) for v in values) + "]"

    return (f'description = "fake"\nrequires = "any"\nseeds = {seeds}\n\n'
            f'[[group]]\ntechnique = "fake"\ntiers = ["quick", "full"]\n'
            f"dtypes = {toml_list(dtypes)}\ndirections = {toml_list(directions)}\n"
            f"[group.grid]\nN = {toml_list(n_values)}\n" + extra_groups)
