"""Which decisions sink DOCSTREAMS_SINK_DSN selects, without a database server."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.errors import ConfigError
from streams.settings import Settings
from streams.sink import DecisionsSink
from streams.sink_postgres import open_sink, redact


def test_unset_is_the_sqlite_file_under_home(tmp_path: Path):
    sink = open_sink(Settings(home=tmp_path, bootstrap=None))
    assert isinstance(sink, DecisionsSink) and (tmp_path / "decisions.sqlite").exists()
    sink.close()


def test_a_sqlite_url_names_the_file(tmp_path: Path):
    path = tmp_path / "elsewhere" / "d.sqlite"
    sink = open_sink(Settings(home=tmp_path, bootstrap=None, sink_dsn=f"sqlite:///{path}"))
    assert isinstance(sink, DecisionsSink) and path.exists()
    sink.close()


def test_an_unknown_scheme_is_a_config_error_that_hides_the_password(tmp_path: Path):
    env = {"DOCSTREAMS_SINK_DSN": "mysql://me:hunter2@db/x", "DOCSTREAMS_HOME": str(tmp_path)}
    with pytest.raises(ConfigError, match="postgresql://") as info:
        open_sink(Settings.from_env(env))
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize("dsn, shown", [
    ("postgresql://me:hunter2@db:5432/x", "postgresql://me:***@db:5432/x"),
    ("postgresql://me@db/x", "postgresql://me@db/x"),
    ("host=db password=hunter2 dbname=x", "host=db password=*** dbname=x"),
])
def test_redact(dsn: str, shown: str):
    assert redact(dsn) == shown
