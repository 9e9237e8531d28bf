"""Test-wide settings: few threads (CI has 2 cores), no progress bars, runs written under tmp_path."""

import os

import pytest
import torch

os.environ.setdefault("DULAB_NO_PROGRESS", "1")
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch):
    """Each test runs in its own directory, so default run directories (runs/...) never collide."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DULAB_RUN_DIR", raising=False)
