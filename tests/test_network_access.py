"""Safe on a lab network: who may connect, cross-site requests, DNS rebinding, where workers PUT."""
from __future__ import annotations

import argparse

import pytest
import requests

from cluster.cli import run_cluster
from cluster.dataserver import DataServer
from cluster.http_base import Access
from cluster.ruleserver import RuleServer
from rules.dataserver_client import DataClient
from rules.errors import RequestRefused
from rules.ruleserver_client import TOKEN_ENV, TOKEN_HEADER, RuleServerClient

QUEUES = "/distributor/queues"


@pytest.fixture
def guarded_rule_server():
    """A rule server that treats loopback like any other network: token or nothing."""
    with RuleServer(port=0, access=Access(token="s3cret", loopback=False)) as server:
        yield server


def test_strangers_need_the_token(guarded_rule_server):
    url = guarded_rule_server.url + QUEUES
    reply = requests.get(url, timeout=5)
    assert reply.status_code == 403 and "token" in reply.json()["error"]
    assert requests.get(url, headers={TOKEN_HEADER: "wrong"}, timeout=5).status_code == 403
    assert requests.get(url, headers={TOKEN_HEADER: "s3cret"}, timeout=5).status_code == 200


def test_engine_clients_send_the_token_from_the_environment(guarded_rule_server, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, "s3cret")
    client = RuleServerClient(guarded_rule_server.url)
    assert client.queue_info() == {}


def test_allowed_networks_need_no_token():
    access = Access.parse(["127.0.0.0/8"], None)
    access = Access(access.networks, None, loopback=False)
    with RuleServer(port=0, access=access) as server:
        assert requests.get(server.url + QUEUES, timeout=5).status_code == 200
    assert Access.parse(["192.168.1.0/24"]).admits("192.168.1.7", None)
    assert not Access.parse(["192.168.1.0/24"]).admits("10.0.0.7", None)
    assert Access(token="t").admits("10.0.0.7", "t") and Access().admits("::1", None)
    with pytest.raises(ValueError, match="not a network"):
        Access.parse(["lab"])


def test_cross_site_requests_cannot_change_state(rule_server):
    url = rule_server.url
    rule_id = requests.post(url + "/add_integer_id_rule", json={"template": "{}"},
                            timeout=5).json()["ruleID"]
    evil = {"Origin": "http://evil.example"}
    reply = requests.post(f"{url}/inactivate_rule?ruleID={rule_id}", headers=evil, timeout=5)
    assert reply.status_code == 403 and "cross-origin" in reply.json()["error"]
    reply = requests.get(f"{url}/release_rule_tasks?ruleID={rule_id}&release_start=0"
                         "&release_end=5", headers={"Sec-Fetch-Site": "cross-site"}, timeout=5)
    assert reply.status_code == 403
    # An <img src=...> cannot POST, and the state changes PYME's clients POST refuse GET.
    assert requests.get(f"{url}/inactivate_rule?ruleID={rule_id}", timeout=5).status_code == 405
    assert requests.get(url + QUEUES, timeout=5).json()["result"][rule_id]["active"] is True
    # The status page's own Abort button (same origin) still works.
    own = {"Origin": url, "Sec-Fetch-Site": "same-origin"}
    assert requests.post(f"{url}/inactivate_rule?ruleID={rule_id}", headers=own,
                         timeout=5).status_code == 200


def test_browsers_on_a_rebound_dns_name_are_refused(rule_server, data_server):
    browser = {"User-Agent": "Mozilla/5.0"}
    for server, path in ((rule_server, QUEUES), (data_server, "/__status")):
        rebound = dict(browser, Host=f"attacker.example:{server.port}")
        assert requests.get(server.url + path, headers=rebound, timeout=5).status_code == 403
        assert requests.get(server.url + path, headers=browser, timeout=5).status_code == 200


def test_results_are_put_only_to_the_clusters_own_data_servers(data_root, tmp_path,
                                                               data_server):
    other_root = tmp_path / "other"
    other_root.mkdir()
    with DataServer(root=other_root, port=0) as other:
        client = DataClient(data_server.url)
        with pytest.raises(RequestRefused, match="not one of this cluster's data servers"):
            client.put_url(other.url + "/__aggregate_txt/stolen.txt", b"results")
        assert list(other_root.iterdir()) == []
        client.put_url(data_server.url + "/__aggregate_txt/mine.txt", b"results")
        assert (data_root / "mine.txt").read_bytes() == b"results"


def _cluster_args(tmp_path, **overrides) -> argparse.Namespace:
    args = dict(root=str(tmp_path), workers=0, rule_port=0, data_port=0, bind="0.0.0.0",
                serverfilter="t", allow=[], token=None)
    args.update(overrides)
    return argparse.Namespace(**args)


def test_binding_beyond_loopback_needs_an_explicit_choice(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert run_cluster(_cluster_args(tmp_path)) == 2
    assert "--allow" in capsys.readouterr().err
    assert run_cluster(_cluster_args(tmp_path, allow=["not-a-net"])) == 2
    assert "not a network" in capsys.readouterr().err
