"""Test-session guards shared by unit and integration tests."""

from __future__ import annotations

import os

import pytest

from tests.corpus import CORPUS


def pytest_sessionstart(session: pytest.Session) -> None:
    # Most tests run on the real corpus; without it they would skip and the run would
    # look green while testing little. Refuse instead, unless explicitly allowed.
    if not CORPUS.is_dir() and os.environ.get("DOCSTREAMS_ALLOW_NO_CORPUS") != "1":
        raise pytest.UsageError(
            f"the document corpus is not at {CORPUS}: set DOCSTREAMS_CORPUS (make test "
            "CORPUS=...) or DOCSTREAMS_ALLOW_NO_CORPUS=1 to run without it")
