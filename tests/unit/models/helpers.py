"""Prompts and draft collection shared by the backend comparison tests (CPU, ONNX, CUDA)."""

from __future__ import annotations

from decoding.engine import CompletionRequest, Engine
from decoding.settings import Settings
from models.loading import LoadedModel

CODE = "import os\n\n\ndef join_all(parts):\n    result = os.path.join(*parts)\n    return result\n\n\nclass Box:\n    "
PROMPTS = [CODE, "for i in range(10):\n    print(", "x = [1, 2,", "def f(a, b):\n    return a"]


def prompt_drafts(loaded: LoadedModel, s: Settings) -> list[list[list[int]]]:
    """The drafts' tokens for each of PROMPTS, from one engine."""
    engine = Engine(loaded)
    return [[d.token_ids for d in engine.complete(CompletionRequest(t, len(t), settings=s)).drafts] for t in PROMPTS]
