"""Where the shared corpus is, for tests: ``$DOCSTREAMS_CORPUS`` or ``../shared/corpus``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CORPUS = Path(os.environ.get("DOCSTREAMS_CORPUS")
              or Path(__file__).resolve().parents[2] / "shared" / "corpus")


def corpus_file(rel: str) -> Path:
    path = CORPUS / rel
    if not path.exists():
        pytest.skip(f"corpus file {path} not present (set DOCSTREAMS_CORPUS)")
    return path


def password_from_name(name: str) -> str | None:
    """The corpus names an encrypted file's password after ``pw-``."""
    if "_pw-" not in name:
        return None
    return name.split("_pw-", 1)[1].rsplit(".pdf", 1)[0]
