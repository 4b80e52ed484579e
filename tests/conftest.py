"""Shared test setup: helper modules in this folder import as top-level modules; the ``torch`` marker
skips cleanly when PyTorch is not installed; the ``ray`` marker runs only with ``-m ray`` (a Ray instance
takes seconds to start) and skips cleanly when Ray is not installed."""
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
    ray_asked = "ray" in (config.option.markexpr or "")
    ray_missing = importlib.util.find_spec("ray") is None
    if not ray_asked or ray_missing:
        skip = pytest.mark.skip(reason="needs Ray (pip install 'onnxplain[ray]')" if ray_missing
                                else "starts a Ray instance: runs with -m ray")
        for item in items:
            if item.get_closest_marker("ray") is not None:
                item.add_marker(skip)
