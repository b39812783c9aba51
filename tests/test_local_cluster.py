"""The cluster of one as a whole: PYME's local name service, clean stops, the worker pool."""
from __future__ import annotations

import sqlite3

import pytest
import requests

from cluster.local import start_local_cluster
from rules import nameservice
from rules.connection import default_cluster, set_default_cluster
from rules.errors import ClusterError


@pytest.fixture
def no_default_cluster(monkeypatch):
    monkeypatch.delenv("PYME_RULESERVER_URL", raising=False)
    monkeypatch.delenv("PYME_DATASERVER_URL", raising=False)
    set_default_cluster(None)
    yield
    set_default_cluster(None)


def test_registered_cluster_is_found_by_default_cluster(tmp_path, no_default_cluster):
    with pytest.raises(ClusterError, match="spoolside cluster"):
        default_cluster()
    with start_local_cluster(tmp_path, serverfilter="bench7", register=True) as lc:
        found = default_cluster()
        assert found.ruleserver_url == lc.ruleserver_url
        assert found.dataserver_urls == [lc.dataserver_url]
        assert found.serverfilter == "bench7"
    set_default_cluster(None)
    assert nameservice.services(nameservice.RULESERVER_SERVICE) == {}
    with pytest.raises(ClusterError):
        default_cluster()


def test_name_service_rows_follow_pyme_layout(tmp_path, monkeypatch):
    monkeypatch.setenv(nameservice.DIRECTORY_ENV, str(tmp_path))
    with start_local_cluster(tmp_path / "root", serverfilter="lab2", register=True) as lc:
        with sqlite3.connect(tmp_path / "_pyme-http.sqlite") as db:
            rows = db.execute("SELECT name, address, port, creation_time FROM dns").fetchall()
        (name, address, port, created), = rows
        assert name.startswith("PYMEDataServer [lab2]:") and " - PID:" in name and len(name) <= 63
        assert f"http://{address}:{port}" == lc.dataserver_url and created > 0
    with sqlite3.connect(tmp_path / "_pyme-http.sqlite") as db:
        assert db.execute("SELECT count(*) FROM dns").fetchone() == (0,)


def test_dead_entries_are_ignored(tmp_path, monkeypatch):
    monkeypatch.setenv(nameservice.DIRECTORY_ENV, str(tmp_path))
    with start_local_cluster(tmp_path / "root") as lc:
        port = int(lc.ruleserver_url.rsplit(":", 1)[1])
    nameservice.register(nameservice.RULESERVER_SERVICE, "PYMERuleServer:gone - PID:1", "127.0.0.1",
                         port)
    assert nameservice.services(nameservice.RULESERVER_SERVICE) == {}


def test_stopped_servers_drop_kept_alive_connections(tmp_path):
    lc = start_local_cluster(tmp_path)
    session = requests.Session()
    assert session.get(lc.ruleserver_url + "/distributor/queues", timeout=5).status_code == 200
    assert session.get(lc.dataserver_url + "/", timeout=5).status_code == 200
    lc.stop()
    for url in (lc.ruleserver_url + "/distributor/queues", lc.dataserver_url + "/"):
        with pytest.raises(requests.ConnectionError):
            session.get(url, timeout=5)
    session.close()


def test_bundled_recipes_are_published_under_recipes(tmp_path):
    (tmp_path / "RECIPES").mkdir()
    (tmp_path / "RECIPES" / "measure_blobs.yaml").write_text("# the user's own\n")
    with start_local_cluster(tmp_path) as lc:
        listing = requests.get(lc.dataserver_url + "/RECIPES/", timeout=5).json()
    assert {"render_image.yaml", "measure_blobs.yaml"} <= set(listing)
    assert (tmp_path / "RECIPES" / "measure_blobs.yaml").read_text() == "# the user's own\n"


def test_two_clusters_on_one_machine_get_two_names_and_clients_must_choose(tmp_path,
                                                                          no_default_cluster):
    with start_local_cluster(tmp_path / "a", register=True) as first, \
            start_local_cluster(tmp_path / "b", register=True) as second:
        assert first.serverfilter != second.serverfilter
        assert second.serverfilter.startswith(first.serverfilter)
        with pytest.raises(ClusterError) as refused:
            default_cluster()
        message = str(refused.value)
        assert "2 clusters run on this machine" in message
        for lc in (first, second):
            assert f"--server {lc.ruleserver_url} --dataserver {lc.dataserver_url}" in message
        with pytest.raises(RuntimeError, match="already runs on this machine"):
            start_local_cluster(tmp_path / "c", serverfilter=first.serverfilter, register=True)
    with start_local_cluster(tmp_path / "a", register=True) as only:
        assert default_cluster().dataserver_urls == [only.dataserver_url]
