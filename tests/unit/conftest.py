"""Unit tests run tiny models: their matmuls are fastest on one thread (two threads spin for ms)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def data_file(tmp_path, monkeypatch):
    """Four SafeEdit items in a JSON file, and a private cache (the user's is never touched)."""
    import json

    from tiny import safeedit_json

    monkeypatch.setenv("DETOXEDIT_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "items.json"
    path.write_text(json.dumps([safeedit_json(i) for i in range(4)]), encoding="utf-8")
    return path
