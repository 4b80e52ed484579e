"""The ``fuzz`` marker: the fuzzers' short run is selected with ``pytest -m fuzz`` (as .ci/run does, after
installing atheris) and skipped in a plain ``pytest`` run."""
import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "fuzz: a short coverage-guided fuzzing run (needs atheris; select with -m fuzz)")


def pytest_collection_modifyitems(config, items):
    if "fuzz" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="fuzzing runs only when selected: pytest -m fuzz")
    for item in items:
        if "fuzz" in item.keywords:
            item.add_marker(skip)
