"""Shared fixtures: tiny models (fast, unit) and the real default model (loaded once per session)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny import tiny_model, tiny_tokenizer  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real dev data beside the repo (never copied into it)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real dev data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture()
def tiny_llama():
    return tiny_model("llama"), tiny_tokenizer()


@pytest.fixture(scope="session")
def default_model():
    """SmolLM2-135M-Instruct, loaded once per test session. Tests must not leave it edited."""
    from detoxedit.models import load_model

    return load_model("default")
