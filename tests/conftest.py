"""Shared fixtures: real servers on free loopback ports, the PYME fixtures, a scratch data root."""
from __future__ import annotations

import os
import pathlib
import shutil

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(autouse=True)
def _private_name_service(tmp_path_factory, monkeypatch):
    """Tests never see (or leave) clusters in this machine's PYME local name service."""
    monkeypatch.setenv("PYME_NAMESERVICE_DIR", str(tmp_path_factory.mktemp("nameservice")))

REPO = pathlib.Path(__file__).resolve().parents[1]
PYME_FIXTURES = REPO.parent / "shared" / "fixtures" / "pyme"


@pytest.fixture(scope="session")
def pyme_fixtures() -> pathlib.Path:
    """``shared/fixtures/pyme``: a series and a results file written by PYME itself."""
    if not PYME_FIXTURES.is_dir():
        raise RuntimeError(f"PYME fixtures not found at {PYME_FIXTURES}")
    return PYME_FIXTURES


@pytest.fixture
def data_root(tmp_path) -> pathlib.Path:
    root = tmp_path / "data"
    root.mkdir()
    return root


@pytest.fixture
def rule_server():
    """A rule server on a free loopback port (short task timeout for tests)."""
    from cluster.ruleserver import RuleServer
    server = RuleServer(bind="127.0.0.1", port=0)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def data_server(data_root):
    """A data server over an empty scratch root on a free loopback port."""
    from cluster.dataserver import DataServer
    server = DataServer(root=data_root, bind="127.0.0.1", port=0, serverfilter="testcluster")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fixture_series_root(data_root, pyme_fixtures) -> pathlib.Path:
    """Data root holding PYME's fixture series as ``pyme/series.pcs`` and its results file."""
    shutil.copytree(pyme_fixtures / "series.pcs", data_root / "pyme" / "series.pcs")
    shutil.copy(pyme_fixtures / "results.h5r", data_root / "pyme" / "results.h5r")
    return data_root
