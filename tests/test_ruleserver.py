"""Rule server: per-endpoint conformance with PYME's wire format, and every bad-input case."""
from __future__ import annotations

import gzip
import json
import re
import socket
import threading
import time
import urllib.request

import pytest
import requests

RULE_ID_RE = re.compile(r"^\d{6}-[0-9a-f]{32}$")
INFO_KEYS = {"tasksPosted": int, "tasksRunning": int, "tasksCompleted": int, "tasksFailed": int,
             "averageExecutionCost": float, "active": bool, "tasksTimedOut": int,
             "tasksCompleteAfterTimeout": int, "tasksRefusedLate": int, "finished": bool,
             "expired": bool, "tasksFailedUpstream": int}
TEMPLATE = '{"id": "{{ruleID}}~{{taskID}}", "type": "recipe", "inputs": {{taskInputs}}}'


@pytest.fixture
def http():
    with requests.Session() as session:
        yield session


def add_rule(http, url, body=None, **params):
    body = {"template": TEMPLATE} if body is None else body
    r = http.post(url + "/add_integer_id_rule", params=params, data=json.dumps(body))
    assert r.status_code == 200, r.text
    return r.json()["ruleID"]


def info(http, url, rule_id):
    return http.get(url + "/distributor/queues").json()["result"].get(rule_id)


def test_add_rule_reply_and_ids(rule_server, http):
    r = http.post(rule_server.url + "/add_integer_id_rule", data=json.dumps({"template": "t"}))
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    reply = r.json()
    assert set(reply) == {"ok", "ruleID"} and reply["ok"] == "True"
    assert RULE_ID_RE.match(reply["ruleID"]) and reply["ruleID"].startswith("000000-")
    # Unlike PYME's server, creating a rule takes a POST (as PYME's client sends it)
    r2 = http.get(rule_server.url + "/add_integer_id_rule?max_tasks=10",
                  data=json.dumps({"template": "t"}))
    assert r2.status_code == 405
    r2 = http.post(rule_server.url + "/add_integer_id_rule?max_tasks=10",
                   data=json.dumps({"template": "t"}))
    assert r2.json()["ruleID"].startswith("000001-")
    q = info(http, rule_server.url, reply["ruleID"])
    assert set(q) == set(INFO_KEYS)
    for key, typ in INFO_KEYS.items():
        assert type(q[key]) is typ, key
    assert q["tasksPosted"] == 0 and q["active"] is True and q["finished"] is False


def test_client_chosen_rule_id_replaces(rule_server, http):
    url = rule_server.url
    rid = add_rule(http, url, max_tasks=10, release_start=0, release_end=10, ruleID="my-rule.1")
    assert rid == "my-rule.1"
    assert info(http, url, rid)["tasksPosted"] == 10
    assert add_rule(http, url, max_tasks=10, release_start=0, release_end=3, ruleID=rid) == rid
    assert info(http, url, rid)["tasksPosted"] == 3


def test_adverts_bid_handin_shapes(rule_server, http):
    url = rule_server.url
    inputs = {str(i): {"input": f"PYME-CLUSTER://c/d/{i}.tif"} for i in range(4)}
    rid = add_rule(http, url, {"template": TEMPLATE, "inputsByTask": inputs},
                   max_tasks=4, release_start=0, release_end=3)
    plain = add_rule(http, url, max_tasks=2, release_start=0, release_end=2)
    ads = http.get(url + "/task_advertisements").json()
    assert isinstance(ads, list) and len(ads) == 2
    by_id = {a["ruleID"]: a for a in ads}
    assert set(by_id[rid]) == {"ruleID", "taskTemplate", "availableTaskIDs", "inputsByTask"}
    assert by_id[rid]["taskTemplate"] == TEMPLATE
    assert by_id[rid]["availableTaskIDs"] == [0, 1, 2]
    assert by_id[rid]["inputsByTask"] == {k: inputs[k] for k in ("0", "1", "2")}
    assert set(by_id[plain]) == {"ruleID", "taskTemplate", "availableTaskIDs"}

    bids = [{"ruleID": plain, "taskIDs": [1], "costs": [0.01]},
            {"ruleID": rid, "taskIDs": [0, 2], "costs": [0.01, 0.1]}]
    awards = http.get(url + "/bid_on_tasks", data=json.dumps(bids)).json()
    assert awards == [{"ruleID": plain, "taskIDs": [1], "template": TEMPLATE},
                      {"ruleID": rid, "taskIDs": [0, 2], "template": TEMPLATE}]
    # already assigned tasks are not awarded twice
    again = http.get(url + "/bid_on_tasks", data=json.dumps(bids[1:])).json()
    assert again == [{"ruleID": rid, "taskIDs": [], "template": TEMPLATE}]
    ads = {a["ruleID"]: a for a in http.get(url + "/task_advertisements").json()}
    assert ads[rid]["availableTaskIDs"] == [1] and list(ads[rid]["inputsByTask"]) == ["1"]

    q = info(http, url, rid)
    assert (q["tasksPosted"], q["tasksRunning"], q["tasksCompleted"]) == (3, 2, 0)
    assert q["averageExecutionCost"] == pytest.approx(0.055, abs=1e-6)
    r = http.post(url + "/handin", data=json.dumps(
        [{"ruleID": rid, "taskIDs": [0, 2], "status": [3, 4]}]))
    assert r.status_code == 200 and r.json() == {"ok": "True"}
    q = info(http, url, rid)
    assert (q["tasksRunning"], q["tasksCompleted"], q["tasksFailed"]) == (0, 1, 1)


def test_release_mark_complete_inactivate(rule_server, http):
    url = rule_server.url
    rid = add_rule(http, url, max_tasks=100)
    r = http.get(url + "/release_rule_tasks",
                 params={"ruleID": rid, "release_start": 0, "release_end": 10})
    assert r.json() == {"ok": "True"}
    # start >= end is a no-op
    assert http.get(url + "/release_rule_tasks", params={
        "ruleID": rid, "release_start": 5, "release_end": 5}).json() == {"ok": "True"}
    assert info(http, url, rid)["tasksPosted"] == 10
    ids = list(range(10))
    http.get(url + "/bid_on_tasks", data=json.dumps(
        [{"ruleID": rid, "taskIDs": ids, "costs": [0.0] * 10}]))
    http.post(url + "/handin", data=json.dumps(
        [{"ruleID": rid, "taskIDs": ids, "status": [3] * 10}]))
    assert info(http, url, rid)["finished"] is False  # target is still max_tasks
    # n_tasks below the released count or above max_tasks is refused
    for n in (5, 101):
        r = http.get(url + "/mark_release_complete", params={"ruleID": rid, "n_tasks": n})
        assert r.status_code == 400 and r.json()["ok"] == "False"
    r = http.get(url + "/mark_release_complete", params={"ruleID": rid})
    assert r.json() == {"ok": "True"}
    assert info(http, url, rid)["finished"] is True

    other = add_rule(http, url, max_tasks=5, release_start=0, release_end=5)
    assert http.post(url + "/inactivate_rule", params={"ruleID": other}).json() == {"ok": "True"}
    assert info(http, url, other)["active"] is False
    assert other not in {a["ruleID"] for a in http.get(url + "/task_advertisements").json()}
    award = http.get(url + "/bid_on_tasks", data=json.dumps(
        [{"ruleID": other, "taskIDs": [0], "costs": [0.0]}])).json()
    assert award == [{"ruleID": other, "taskIDs": [], "template": ""}]


def test_mark_release_complete_with_n_tasks(rule_server, http):
    url = rule_server.url
    rid = add_rule(http, url, max_tasks=100, release_start=0, release_end=10)
    assert http.get(url + "/mark_release_complete",
                    params={"ruleID": rid, "n_tasks": 20}).json() == {"ok": "True"}
    http.get(url + "/bid_on_tasks", data=json.dumps(
        [{"ruleID": rid, "taskIDs": list(range(10)), "costs": [0.0] * 10}]))
    http.post(url + "/handin", data=json.dumps(
        [{"ruleID": rid, "taskIDs": list(range(10)), "status": 3}]))
    assert info(http, url, rid)["finished"] is False
    http.get(url + "/release_rule_tasks", params={"ruleID": rid, "release_start": 10,
                                                  "release_end": 20})
    http.get(url + "/bid_on_tasks", data=json.dumps(
        [{"ruleID": rid, "taskIDs": list(range(10, 20)), "costs": [0.0] * 10}]))
    http.post(url + "/handin", data=json.dumps(
        [{"ruleID": rid, "taskIDs": list(range(10, 20)), "status": [3] * 10}]))
    q = info(http, url, rid)
    assert q["finished"] is True and q["tasksCompleted"] == 20


def test_queue_info_longpoll_and_status_page(rule_server, http):
    url = rule_server.url
    rid = add_rule(http, url, max_tasks=3)
    t = time.monotonic()
    r = http.get(url + "/queue_info_longpoll")
    assert time.monotonic() - t < 3
    assert r.json()["ok"] is True and rid in r.json()["result"]
    # a change wakes the long poll and shows up in its answer
    timer = threading.Timer(0.1, lambda: requests.get(
        url + "/release_rule_tasks", params={"ruleID": rid, "release_start": 0, "release_end": 3}))
    timer.start()
    deadline = time.monotonic() + 5
    while info(http, url, rid)["tasksPosted"] != 3:
        assert time.monotonic() < deadline
        r = http.get(url + "/queue_info_longpoll")
    timer.join()
    page = http.get(url + "/")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "Abort" in page.text and "/inactivate_rule?ruleID=" in page.text
    assert "/queue_info_longpoll" in page.text


def test_spoolside_endpoints(rule_server, http):
    url = rule_server.url
    rid = add_rule(http, url, {"template": "a", "on_completion": {"template": "b"}},
                   max_tasks=2, release_start=0, release_end=2)
    assert http.get(url + "/spoolside/followons", params={"ruleID": rid}).json() == \
        {"ok": "True", "ruleIDs": []}
    http.get(url + "/bid_on_tasks", data=json.dumps(
        [{"ruleID": rid, "taskIDs": [0, 1], "costs": [0.0, 0.0]}]))
    http.post(url + "/handin", data=json.dumps([{"ruleID": rid, "taskIDs": [0, 1],
                                                 "status": [4, 4]}]))
    q = info(http, url, rid)
    assert q["finished"] is True and q["tasksFailed"] == 2  # failed tasks count as finished
    child = http.get(url + "/spoolside/followons", params={"ruleID": rid}).json()["ruleIDs"]
    assert len(child) == 1 and RULE_ID_RE.match(child[0])
    rules = http.get(url + "/spoolside/rules").json()
    assert rules[rid]["parent"] is None and rules[rid]["followons"] == child
    assert rules[child[0]]["parent"] == rid and isinstance(rules[child[0]]["created"], float)
    r = http.post(url + "/spoolside/requeue_failed", params={"ruleID": rid}).json()
    assert r == {"ok": "True", "requeued": 2}
    q = info(http, url, rid)
    assert (q["tasksPosted"], q["tasksFailed"], q["tasksCompleted"], q["finished"]) == \
        (2, 0, 0, False)
    assert [a["availableTaskIDs"] for a in http.get(url + "/task_advertisements").json()
            if a["ruleID"] == rid] == [[0, 1]]


# -- HTTP behaviour ---------------------------------------------------------------------------
def _raw_request(sock, method, path, body=b"", headers=""):
    sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
                 f"{headers}\r\n".encode() + body)


def _read_response(fileobj):
    status = fileobj.readline().decode()
    headers = {}
    while True:
        line = fileobj.readline().decode().strip()
        if not line:
            break
        key, value = line.split(":", 1)
        headers[key.lower()] = value.strip()
    body = fileobj.read(int(headers["content-length"]))
    return int(status.split()[1]), headers, body


def test_no_gzip_clients_and_keep_alive(rule_server, http):
    url = rule_server.url
    big = {"template": "x" * 5000}
    rid = add_rule(http, url, big, max_tasks=5, release_start=0, release_end=5)
    # urllib sends no Accept-Encoding: the reply must still arrive, uncompressed
    with urllib.request.urlopen(url + "/task_advertisements", timeout=5) as resp:
        assert resp.headers.get("Content-Encoding") is None
        assert json.loads(resp.read())[0]["ruleID"] == rid
    # several requests on one raw connection, with and without gzip
    with socket.create_connection((rule_server._http.host, rule_server.port), timeout=5) as sock:
        f = sock.makefile("rb")
        _raw_request(sock, "GET", "/distributor/queues")
        status, headers, body = _read_response(f)
        assert status == 200 and "content-encoding" not in headers
        assert json.loads(body)["result"][rid]["tasksPosted"] == 5
        _raw_request(sock, "GET", "/task_advertisements", headers="Accept-Encoding: gzip\r\n")
        status, headers, body = _read_response(f)
        assert headers.get("content-encoding") == "gzip"
        assert json.loads(gzip.decompress(body))[0]["taskTemplate"] == "x" * 5000
        _raw_request(sock, "POST", "/bid_on_tasks",
                     json.dumps([{"ruleID": rid, "taskIDs": [0], "costs": [0.1]}]).encode())
        status, headers, body = _read_response(f)
        assert status == 200 and json.loads(body)[0]["taskIDs"] == [0]
        # an error keeps the connection usable too
        _raw_request(sock, "GET", "/release_rule_tasks?ruleID=nope&release_start=0&release_end=1")
        status, headers, body = _read_response(f)
        assert status == 404 and json.loads(body)["ok"] == "False"
        _raw_request(sock, "POST", "/handin", gzip.compress(json.dumps(
            [{"ruleID": rid, "taskIDs": [0], "status": [3]}]).encode()),
            headers="Content-Encoding: gzip\r\n")
        status, headers, body = _read_response(f)
        assert status == 200 and json.loads(body) == {"ok": "True"}
    assert info(http, url, rid)["tasksCompleted"] == 1


# -- bad input --------------------------------------------------------------------------------
BAD_RULES = [
    ("malformed JSON", "{not json", {}),
    ("a list where the rule object belongs", json.dumps([{"template": "t"}]), {}),
    ("missing template", json.dumps({"inputsByTask": {}}), {}),
    ("template not a string", json.dumps({"template": 5}), {}),
    ("inputsByTask as a list", json.dumps({"template": "t", "inputsByTask": [{"a": 1}]}), {}),
    ("inputsByTask bad key", json.dumps({"template": "t", "inputsByTask": {"x": 1}}), {}),
    ("on_completion a list", json.dumps({"template": "t", "on_completion": [{"template": "c"}]}),
     {}),
    ("on_completion without template", json.dumps({"template": "t", "on_completion": {}}), {}),
    ("on_completion bad max_tasks", json.dumps(
        {"template": "t", "on_completion": {"template": "c", "max_tasks": "many"}}), {}),
    ("nested on_completion malformed", json.dumps(
        {"template": "t", "on_completion": {"template": "c", "on_completion": {"max_tasks": 2}}}),
     {}),
    ("on_completion bad rule_timeout", json.dumps(
        {"template": "t", "on_completion": {"template": "c", "rule_timeout": -1}}), {}),
    ("max_tasks 1e6", json.dumps({"template": "t"}), {"max_tasks": "1e6"}),
    ("max_tasks zero", json.dumps({"template": "t"}), {"max_tasks": "0"}),
    ("timeout not a number", json.dumps({"template": "t"}), {"timeout": "soon"}),
    ("release_start only", json.dumps({"template": "t"}), {"release_start": "0"}),
    ("release beyond max_tasks", json.dumps({"template": "t"}),
     {"max_tasks": "10", "release_start": "0", "release_end": "11"}),
    ("negative release", json.dumps({"template": "t"}),
     {"max_tasks": "10", "release_start": "-1", "release_end": "3"}),
    ("missing inputsByTask entry", json.dumps({"template": "t", "inputsByTask": {"0": {}}}),
     {"max_tasks": "10", "release_start": "0", "release_end": "2"}),
    ("ruleID with ~", json.dumps({"template": "t"}), {"ruleID": "a~b"}),
    ("unknown query parameter", json.dumps({"template": "t"}), {"maxtasks": "10"}),
    ("no body", "", {}),
]


def assert_json_error(r, statuses=(400,)):
    assert r.status_code in statuses, (r.status_code, r.text)
    assert r.headers["Content-Type"] == "application/json"
    reply = r.json()
    assert set(reply) == {"ok", "error"} and reply["ok"] == "False"
    assert isinstance(reply["error"], str) and reply["error"]


def assert_still_serving(http, url, good):
    q = http.get(url + "/distributor/queues")
    assert q.status_code == 200 and good in q.json()["result"]
    ads = http.get(url + "/task_advertisements")
    assert ads.status_code == 200 and good in {a["ruleID"] for a in ads.json()}


@pytest.mark.parametrize("what,body,params", BAD_RULES, ids=[b[0] for b in BAD_RULES])
def test_bad_rule_creation(rule_server, http, what, body, params):
    url = rule_server.url
    good = add_rule(http, url, max_tasks=3, release_start=0, release_end=3)
    before = set(http.get(url + "/distributor/queues").json()["result"])
    r = http.post(url + "/add_integer_id_rule", params=params, data=body)
    assert_json_error(r)
    assert set(http.get(url + "/distributor/queues").json()["result"]) == before  # not created
    assert_still_serving(http, url, good)


def test_bad_requests_on_existing_rules(rule_server, http):
    url = rule_server.url
    good = add_rule(http, url, max_tasks=10, release_start=0, release_end=5)
    keyed = add_rule(http, url, {"template": TEMPLATE, "inputsByTask": {"0": {}, "1": {}}},
                     max_tasks=10, release_start=0, release_end=2)
    cases = [
        ("GET", "/release_rule_tasks?ruleID=nope&release_start=0&release_end=1", None, 404),
        ("GET", f"/release_rule_tasks?ruleID={good}&release_start=0&release_end=11", None, 400),
        ("GET", f"/release_rule_tasks?ruleID={good}&release_start=-2&release_end=1", None, 400),
        ("GET", f"/release_rule_tasks?ruleID={good}&release_start=a&release_end=1", None, 400),
        ("GET", f"/release_rule_tasks?ruleID={good}&release_start=0", None, 400),
        ("GET", f"/release_rule_tasks?ruleID={keyed}&release_start=0&release_end=3", None, 400),
        ("GET", f"/release_rule_tasks?ruleID={good}&release_start=0&release_end=1&x=1", None, 400),
        ("GET", "/mark_release_complete?ruleID=nope", None, 404),
        ("GET", f"/mark_release_complete?ruleID={good}&n_tasks=ten", None, 400),
        ("POST", "/inactivate_rule?ruleID=nope", None, 404),
        ("POST", "/inactivate_rule", None, 400),
        ("GET", "/task_advertisements?all=1", None, 400),
        ("GET", "/bid_on_tasks", "{oops", 400),
        ("GET", "/bid_on_tasks", {"ruleID": good, "taskIDs": [0], "costs": [0.1]}, 400),
        ("GET", "/bid_on_tasks", [[good, [0], [0.1]]], 400),
        ("GET", "/bid_on_tasks", [{"ruleID": "nope", "taskIDs": [0], "costs": [0.1]}], 404),
        ("GET", "/bid_on_tasks", [{"ruleID": good, "taskIDs": [0]}], 400),
        ("GET", "/bid_on_tasks", [{"ruleID": good, "taskIDs": [10], "costs": [0.1]}], 400),
        ("GET", "/bid_on_tasks", [{"ruleID": good, "taskIDs": ["0"], "costs": [0.1]}], 400),
        ("POST", "/handin", "[{", 400),
        ("POST", "/handin", {"ruleID": good, "taskIDs": [0], "status": [3]}, 400),
        ("POST", "/handin", [{"ruleID": good, "taskIDs": [0], "status": [7]}], 400),
        ("POST", "/handin", [{"ruleID": good, "taskIDs": [0, 1], "status": [3]}], 400),
        ("POST", "/handin", [{"ruleID": good, "taskIDs": [99], "status": [3]}], 400),
        ("GET", "/distributor/queues?verbose=1", None, 400),
        ("GET", "/spoolside/followons?ruleID=nope", None, 404),
        ("POST", "/spoolside/requeue_failed?ruleID=nope", None, 404),
        ("GET", "/no/such/endpoint", None, 404),
    ]
    for method, path, body, status in cases:
        data = body if isinstance(body, str) or body is None else json.dumps(body)
        r = http.request(method, url + path, data=data)
        assert_json_error(r, (status,))
    # nothing above changed the rules' counters
    q = info(http, url, good)
    assert (q["tasksPosted"], q["tasksRunning"], q["tasksCompleted"]) == (5, 0, 0)
    assert_still_serving(http, url, good)
    assert rule_server.table._thread.is_alive()


def test_handin_for_unknown_rule_applies_the_rest(rule_server, http):
    url = rule_server.url
    good = add_rule(http, url, max_tasks=2, release_start=0, release_end=2)
    http.get(url + "/bid_on_tasks", data=json.dumps(
        [{"ruleID": good, "taskIDs": [0, 1], "costs": [0.0, 0.0]}]))
    r = http.post(url + "/handin", data=json.dumps(
        [{"ruleID": "000999-gone", "taskIDs": [0], "status": [3]},
         {"ruleID": good, "taskIDs": [0, 1], "status": [3, 3]}]))
    assert_json_error(r, (404,))
    assert "000999-gone" in r.json()["error"]
    assert info(http, url, good)["tasksCompleted"] == 2


def test_large_release_is_vectorised(rule_server, http):
    url = rule_server.url
    rid = add_rule(http, url)  # 1,000,000 task slots, as PYME's live rules
    t = time.monotonic()
    r = http.get(url + "/release_rule_tasks", params={"ruleID": rid, "release_start": 0,
                                                      "release_end": 100000})
    assert r.status_code == 200
    ads = http.get(url + "/task_advertisements").json()
    assert time.monotonic() - t < 5  # generous: it takes milliseconds
    assert info(http, url, rid)["tasksPosted"] == 100000
    assert 0 < len(ads[0]["availableTaskIDs"]) <= 30000


def test_tight_status_pollers_are_paced_and_others_are_answered_at_once(rule_server):
    """Several tight-loop pollers: each gets a burst, then one status reply a second; another
    connection (the window, a worker) is not made to wait behind them; gzipped and plain replies
    are the same."""
    from cluster.ruleserver.status import CONTENDED_CONNECTIONS, PER_CONNECTION_BURST
    url = rule_server.url + "/distributor/queues"
    for _ in range(10):  # a reply over 1 KiB: gzipped for clients that ask
        requests.post(rule_server.url + "/add_integer_id_rule", json={"template": "{}"},
                      timeout=10).raise_for_status()
    stop = threading.Event()
    replies: list[list[float]] = [[] for _ in range(CONTENDED_CONNECTIONS + 1)]

    def poll(k: int) -> None:
        with requests.Session() as hot:
            while not stop.is_set():
                hot.get(url, timeout=10).raise_for_status()
                replies[k].append(time.monotonic())

    pollers = [threading.Thread(target=poll, args=(k,)) for k in range(len(replies))]
    t0 = time.monotonic()
    for poller in pollers:
        poller.start()
    with requests.Session() as other:
        try:
            time.sleep(1.5)
            waits = []
            for _ in range(3):
                start = time.monotonic()
                assert other.get(url, timeout=10).json()["ok"] is True
                assert requests.get(rule_server.url + "/task_advertisements", timeout=10).ok
                waits.append(time.monotonic() - start)
        finally:
            stop.set()
            for poller in pollers:
                poller.join(timeout=10)
        for times in replies:  # not 30 each (the global pace alone), let alone hundreds
            assert len([t for t in times if t - t0 <= 1.5]) <= PER_CONNECTION_BURST + 8
        assert max(waits) < 0.5
        plain = requests.get(url, headers={"Accept-Encoding": "identity"}, timeout=10)
        zipped = other.get(url, timeout=10)
        assert zipped.headers["Content-Encoding"] == "gzip" and "Content-Encoding" not in plain.headers
        assert plain.json() == zipped.json() and len(plain.json()["result"]) == 10
