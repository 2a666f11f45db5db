"""Shared fixtures of the test suite."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture(autouse=True)
def _no_handlers_on_closed_streams():
    """detectron2 and mmengine attach stream handlers to the sys.stdout/stderr of the test that first
    set them up (pytest's capture, closed afterwards); drop those after each test, as a new process
    would not have them, so that a later test's stderr holds no 'Logging error' noise."""
    yield
    for logger in [logging.getLogger()] + [logging.getLogger(n) for n in list(logging.root.manager.loggerDict)]:
        for h in list(getattr(logger, "handlers", [])):
            stream = getattr(h, "stream", None)
            if isinstance(h, logging.StreamHandler) and stream is not None and getattr(stream, "closed", False):
                logger.removeHandler(h)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``rehearsal`` (minutes each, real-size models) run only when asked for by name
    (``-m rehearsal``), as ``.ci/run`` does after the main suite when time allows."""
    if "rehearsal" in (config.option.markexpr or ""):
        return
    keep = [it for it in items if it.get_closest_marker("rehearsal") is None]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[it for it in items if it.get_closest_marker("rehearsal") is not None])
        items[:] = keep


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty hub cache, offline (``HF_HUB_OFFLINE=1``): what a cluster node without a network sees."""
    from huggingface_hub import constants

    cache = tmp_path / "hf_cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache
