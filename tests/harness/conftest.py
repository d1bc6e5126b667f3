"""Fixtures for the harness tests: the fake technique plugin, suites written to a temporary
folder, and a helper that runs the `bench` CLI in this process."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from rich.console import Console

from harness import cli, registry, suites

PLUGIN = "tests.fake_technique"


@pytest.fixture(scope="session", autouse=True)
def _registry_loaded():
    """The in-tree techniques are registered for every test, as `bench` does first."""
    registry.load_all()


@pytest.fixture
def fake(monkeypatch):
    """The fake technique, registered here and (through the environment) in worker processes."""
    monkeypatch.setenv("FLASHSUITE_PLUGINS", PLUGIN)
    registry.load_all()
    return importlib.import_module(PLUGIN)


@pytest.fixture
def suite_dir(tmp_path, monkeypatch):
    """Suites by name from a temporary folder: returns write(name, toml_text) -> path."""
    folder = tmp_path / "suites"
    folder.mkdir()
    monkeypatch.setattr(suites, "SUITES_DIR", folder)

    def write(name: str, text: str) -> Path:
        path = folder / f"{name}.toml"
        path.write_text(text)
        return path

    return write


@pytest.fixture
def wide_console(monkeypatch):
    """The CLI's rich console, wide enough that its output is not folded."""
    monkeypatch.setattr(cli, "console", Console(width=400, color_system=None))


@pytest.fixture
def bench(capfd):
    """bench(*argv) -> (exit code, stdout, stderr), the CLI run in this process."""

    def run(*argv: str) -> tuple[int, str, str]:
        capfd.readouterr()  # drop whatever came before
        try:
            code = cli.main([str(a) for a in argv])
        except SystemExit as e:  # argparse errors exit rather than return
            code = e.code
        out, err = capfd.readouterr()
        return code, out, err

    return run
