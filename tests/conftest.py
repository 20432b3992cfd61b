"""Shared test fixtures: isolate weight caches and keep tests offline and single-threaded-friendly."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _isolated_homes(tmp_path_factory, monkeypatch):
    """Point FEATX_HOME and TORCH_HOME at empty temporary directories for every test."""
    home = tmp_path_factory.mktemp("homes")
    monkeypatch.setenv("FEATX_HOME", str(home / "featx"))
    monkeypatch.setenv("TORCH_HOME", str(home / "torch"))
    yield


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
