"""Shared test setup: helper modules in this folder import as top-level modules; the ``torch`` marker
skips cleanly when PyTorch is not installed."""
import importlib.util
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))


def pytest_collection_modifyitems(config, items):
    if "corpus" not in (config.option.markexpr or ""):  # the cached corpus takes minutes: only on request
        skip_corpus = pytest.mark.skip(reason="the cached intake corpus runs with -m corpus")
        for item in items:
            if "corpus" in item.keywords:
                item.add_marker(skip_corpus)
    if importlib.util.find_spec("torch") is None:
        skip = pytest.mark.skip(reason="needs PyTorch (pip install torch==2.13.0)")
        for item in items:
            if "torch" in item.keywords:
                item.add_marker(skip)
