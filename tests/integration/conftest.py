"""One broker per test session; unique topics per test.

``DOCSTREAMS_BOOTSTRAP`` (plus the SASL/SSL variables) points the tests at a real
cluster. Without it the session starts the local broker under ``<repo>/.docstreams``,
where the jars stay cached between runs, and stops it at the end only if it started it
(a broker you started by hand keeps running).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams import broker
from streams.settings import Settings
from tests.integration.pipeline import own_broker_home

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def local_broker_settings() -> Settings:
    """Settings of the repository's local broker (jars cached in <repo>/.docstreams)."""
    return Settings(home=REPO / ".docstreams", bootstrap=None)


@pytest.fixture(scope="session")
def bootstrap(local_broker_settings: Settings) -> Iterator[str]:
    external = os.environ.get("DOCSTREAMS_BOOTSTRAP")
    if external:
        yield external
        return
    info = broker.start(local_broker_settings, timeout=120)
    yield info.bootstrap
    if info.launched:
        broker.stop(local_broker_settings)


@pytest.fixture
def settings(bootstrap: str, tmp_path: Path) -> Settings:
    """Settings on the session broker, with this test's own topics and home directory."""
    home = tmp_path / "home"
    base = Settings.from_env(os.environ, home=home)
    return base.replace(home=home, bootstrap=bootstrap,
                        topic_prefix=f"t{uuid.uuid4().hex[:8]}.")


@pytest.fixture
def own_broker(tmp_path: Path, local_broker_settings: Settings) -> Iterator[Settings]:
    """A broker home of this test's own, stopped at the end (start it with broker.start)."""
    own = own_broker_home(tmp_path / "own-broker", local_broker_settings)
    try:
        yield own
    finally:
        broker.stop(own)
