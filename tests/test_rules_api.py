"""The public rules API against the embedded rule and data servers, over real HTTP."""
from __future__ import annotations

import http.server
import json
import socket
import threading

import pytest
import tables
from helpers import (
    ANALYSIS,
    COMPLETE,
    FAILED,
    SERIES,
    advert_for,
    followon,
    queue_info,
    run_fresh_python,
    wait_for,
    work,
)

import rules
from cluster.http_base import free_port
from rules import errors
from rules.patterns import PatternError


def template_of(url: str, rule_id: str) -> dict:
    advert = wait_for(lambda: advert_for(url, rule_id), what=f"advert of {rule_id}")
    return json.loads(advert["taskTemplate"].replace("{{taskInputs}}", "null"))


TRICKY_RECIPE = ('- localisations.AddPipelineDerivedVars:\n    inputFitResults: FitResults\n'
                 '    note: "quoted \\"text\\" with a back\\\\slash"\n    label: Zellkern µm²\n')


def test_every_public_name_exists():
    names = ["Rule", "RuleFactory", "RecipeRule", "RecipeRuleFactory", "LocalisationRule",
             "LocalisationRuleFactory", "SpoolLocalLocalizationRule", "SpoolLocalLocalizationRuleFactory",
             "NoNewTasks", "verify_cluster_results_filename", "RuleWatcher", "RuleGroupWatcher",
             "RuleStatus", "Cluster", "set_default_cluster", "default_cluster", "MetaDataHandler", "errors"]
    for name in names:
        assert hasattr(rules, name), name
    for method in ("push", "prepare", "status", "watch", "join", "cleanup", "abort", "get_new_tasks",
                   "on_data_complete", "notify"):
        assert callable(getattr(rules.Rule, method)), method
    for prop in ("complete", "data_complete", "output_files", "rule_id"):
        assert isinstance(getattr(rules.Rule, prop), property), prop
    assert isinstance(rules.LocalisationRule.total_frames, property)
    assert isinstance(rules.SpoolLocalLocalizationRule.total_frames, property)
    for method in ("chain", "get_rule", "steps"):
        assert callable(getattr(rules.RuleFactory, method))
    assert rules.LocalisationRuleFactory().rule_type == "localization"
    assert rules.SpoolLocalLocalizationRuleFactory().rule_type == "localization"
    assert rules.RecipeRuleFactory().rule_type == "recipe"
    assert issubclass(rules.NoNewTasks, Exception)
    assert issubclass(errors.ClusterUnreachable, errors.ClusterError)


def test_import_does_no_work():
    code = ("import threading, socket\n"
            "def refuse(*a, **k):\n    raise AssertionError('network at import')\n"
            "socket.socket.connect = refuse\n"
            "n = threading.active_count()\n"
            "import rules, rules.cli, rules.presets, rules.spooler\n"
            "assert threading.active_count() == n\n"
            "import sys\nassert 'IPython' not in sys.modules and 'PyQt5' not in sys.modules\n"
            )
    run_fresh_python(code)


def test_three_step_chain_is_the_nested_rule_pyme_sends(cluster, rule_server, data_root):
    step1 = rules.LocalisationRuleFactory(analysisMetadata=rules.MetaDataHandler(ANALYSIS))
    step2 = rules.RecipeRuleFactory(recipe=TRICKY_RECIPE, output_dir="{{spool_dir}}/analysis")
    step3 = rules.RecipeRuleFactory(recipeURI="PYME-CLUSTER://testcluster/RECIPES/measure_blobs.yaml",
                                    input_patterns={"input": "{{results_dir}}/{{series_stub}}.tif"})
    assert step1.chain(step2) is step2
    step2.chain(step3)
    assert step1.steps() == [step1, step2, step3]

    # record the requests sent to the rule server (a response hook on the client's own session)
    from rules.ruleserver_client import RuleServerClient, make_session
    session = make_session()
    sent = []
    session.hooks["response"].append(lambda r, *a, **k: sent.append(
        (r.request.method, r.request.path_url, r.request.headers.get("Content-Type"))))
    cluster._rules = RuleServerClient(rule_server.url, session=session)

    rule = step1.get_rule({"seriesName": SERIES})
    assert rule.push(cluster) is rule
    url = rule_server.url
    assert sent == [
        ("POST", "/add_integer_id_rule?timeout=3600&max_tasks=8&release_start=0&release_end=8",
         "application/json"),
        ("GET", f"/mark_release_complete?ruleID={rule.rule_id}", None)]
    results = "PYME-CLUSTER://testcluster/pyme/analysis/series.h5r"
    assert rule.output_files == {"results": results}
    agg = f"{cluster.dataserver_urls[0]}/__aggregate_h5r/pyme/analysis/series.h5r"

    # what the server received, read back from its advert
    advert = advert_for(url, rule.rule_id)
    assert advert["availableTaskIDs"] == list(range(8))
    assert "inputsByTask" not in advert
    assert json.loads(advert["taskTemplate"]) == {
        "id": "{{ruleID}}~{{taskID}}", "type": "localization",
        "taskdef": {"frameIndex": "{{taskID}}", "metadata": results + ".json"},
        "inputs": {"frames": SERIES},
        "outputs": {"fitResults": agg + "/FitResults", "driftResults": agg + "/DriftResults"}}
    expected_step2 = {"id": "{{ruleID}}~{{taskID}}", "type": "recipe", "optimal-chunk-size": 1,
                      "inputs": {"input": results},
                      "output_dir": "PYME-CLUSTER://testcluster/pyme/analysis",
                      "taskdef": {"recipe": TRICKY_RECIPE}}
    expected_step3 = {"id": "{{ruleID}}~{{taskID}}", "type": "recipe", "optimal-chunk-size": 1,
                      "inputs": {"input": "PYME-CLUSTER://testcluster/pyme/analysis/series.tif"},
                      "taskdefRef": "PYME-CLUSTER://testcluster/RECIPES/measure_blobs.yaml"}
    nested = rule.rule["on_completion"]
    assert set(nested) == {"template", "on_completion"}
    assert json.loads(nested["template"]) == expected_step2
    assert set(nested["on_completion"]) == {"template"}
    assert json.loads(nested["on_completion"]["template"]) == expected_step3

    # prepare() uploaded the metadata: <results>.json, merged, EM gain fixed, laser-on frame set
    md = json.loads((data_root / "pyme/analysis/series.h5r.json").read_text())
    assert md["Analysis.DetectionThreshold"] == 2.5 and md["Camera.ADOffset"] == 100.0
    assert md["Camera.TrueEMGain"] == 1.0 and md["EstimatedLaserOnFrameNo"] == 0
    status = rule.status()
    assert status["ID"] == rule.rule_id and status["finished"] is False
    assert status["tasksPosted"] == 8 and "errors" not in status

    # the workers: localisation, then the server creates the follow-ons
    assert work(url, rule.rule_id) == list(range(8))
    assert rule.join(timeout=10)["finished"] is True
    child = followon(url, rule.rule_id)
    assert template_of(url, child) == expected_step2
    # the inline recipe survives the trip intact (quotes, backslashes, newlines, non-ASCII)
    assert template_of(url, child)["taskdef"]["recipe"] == TRICKY_RECIPE
    assert work(url, child) == [0]
    grandchild = followon(url, child)
    assert template_of(url, grandchild) == expected_step3
    assert rule.cluster.rules.followon_ids(rule.rule_id) == [child]

    # events were filed into the results file
    def events():
        try:
            return len(cluster.data.read_table("pyme/analysis/series.h5r", "Events"))
        except (FileNotFoundError, errors.ClusterError):
            return 0
    wait_for(lambda: events() == 3, what="events in the results file")
    table = cluster.data.read_table("pyme/analysis/series.h5r", "Events")
    assert table.dtype.names == ("EventName", "EventDescr", "Time")
    assert table["EventName"][0] == b"StartAq"


def test_results_name_gets_suffix_when_taken(cluster, rule_server, data_root):
    (data_root / "pyme/analysis").mkdir(parents=True)
    (data_root / "pyme/analysis/series.h5r").write_bytes(b"x")
    (data_root / "pyme/analysis/series_1.h5r").write_bytes(b"x")
    assert rules.verify_cluster_results_filename(
        "PYME-CLUSTER://testcluster/pyme/analysis/series.h5r", cluster) == \
        "PYME-CLUSTER://testcluster/pyme/analysis/series_2.h5r"
    assert rules.verify_cluster_results_filename("pyme/analysis/new.h5r", cluster) == \
        "pyme/analysis/new.h5r"
    rule = rules.LocalisationRule(SERIES, ANALYSIS, cluster=cluster).push()
    assert rule.output_files["results"].endswith("/pyme/analysis/series_2.h5r")
    assert (data_root / "pyme/analysis/series_2.h5r.json").exists()
    assert (data_root / "pyme/analysis/series.h5r").read_bytes() == b"x"  # never overwritten
    second = rules.LocalisationRule(SERIES, ANALYSIS, cluster=cluster).push()
    assert second.output_files["results"].endswith("/pyme/analysis/series_3.h5r")


def test_default_cluster_is_used(cluster, rule_server):
    rules.set_default_cluster(cluster)
    try:
        assert rules.default_cluster() is cluster
        rule = rules.RecipeRule(recipe="- a: b\n", inputs={"input": [SERIES]}).push()
        assert rule.cluster is cluster and rule.rule_id in queue_info(rule_server.url)
    finally:
        rules.set_default_cluster(None)


def test_glob_inputs_expand_to_full_uris(cluster, rule_server, data_root):
    folder = data_root / "blobs"
    folder.mkdir()
    for name in ("b.tif", "a.tif", "c.txt"):
        (folder / name).write_bytes(b"data")
    rule = rules.RecipeRuleFactory(recipeURI="PYME-CLUSTER://testcluster/RECIPES/count.yaml",
                                   inputs={"input": "PYME-CLUSTER://testcluster/blobs/*.tif"},
                                   output_dir="PYME-CLUSTER://testcluster/out").get_rule({}).push(cluster)
    advert = advert_for(rule_server.url, rule.rule_id)
    assert advert["availableTaskIDs"] == [0, 1]
    assert advert["inputsByTask"] == {"0": {"input": "PYME-CLUSTER://testcluster/blobs/a.tif"},
                                      "1": {"input": "PYME-CLUSTER://testcluster/blobs/b.tif"}}
    assert json.loads(advert["taskTemplate"].replace("{{taskInputs}}", "null"))["inputs"] is None
    assert work(rule_server.url, rule.rule_id) == [0, 1]
    assert rule.join(timeout=10)["tasksCompleted"] == 2
    with pytest.raises(ValueError, match="matched no file"):
        rules.RecipeRule(recipe="- a: b\n", inputs={"input": "blobs/*.png"}, cluster=cluster).push()


def test_input_patterns_and_unknown_variables(cluster, rule_server):
    rule = rules.RecipeRule(recipe="- a: b\n", cluster=cluster, seriesName=SERIES, tag="x1",
                            input_templates={"input": "{{spool_dir}}/{{series_stub}}_{{tag}}.h5r",
                                             "other": "{0[spool_dir]}/old_style.h5r"}).push()
    advert = advert_for(rule_server.url, rule.rule_id)
    assert advert["inputsByTask"]["0"] == {
        "input": "PYME-CLUSTER://testcluster/pyme/series_x1.h5r",
        "other": "PYME-CLUSTER://testcluster/pyme/old_style.h5r"}
    with pytest.raises(PatternError) as info:
        rules.RecipeRule(recipe="- a: b\n", cluster=cluster, seriesName=SERIES,
                         input_patterns={"input": "{{spool_folder}}/x.h5r"}).push()
    assert "spool_folder" in str(info.value) and "spool_dir" in str(info.value)


def test_missing_series_is_a_clear_error(cluster):
    rule = rules.LocalisationRule("PYME-CLUSTER://testcluster/pyme/nothing.pcs", ANALYSIS, cluster=cluster)
    with pytest.raises(FileNotFoundError, match="nothing.pcs not found"):
        rule.push()
    assert rule.rule_id is None


def test_recipe_rule_argument_errors():
    with pytest.raises(ValueError, match="recipe"):
        rules.RecipeRule(inputs={"input": [SERIES]})
    with pytest.raises(ValueError, match="not both"):
        rules.RecipeRule(recipe="- a: b\n", recipeURI="PYME-CLUSTER:///r.yaml")
    with pytest.raises(ValueError, match="'~'"):
        rules.LocalisationRule("PYME-CLUSTER://testcluster/pyme/bad~name.pcs", ANALYSIS)


def test_failed_tasks_give_errors_url(cluster, rule_server):
    rule = rules.RecipeRule(recipe="- a: b\n", inputs={"input": [SERIES, SERIES]}, cluster=cluster).push()
    work(rule_server.url, rule.rule_id, status=FAILED, ids=[0])
    work(rule_server.url, rule.rule_id, status=COMPLETE, ids=[1])
    status = rule.join(timeout=10)
    assert status["tasksFailed"] == 1 and status["tasksCompleted"] == 1
    assert status["errors"] == f"{cluster.dataserver_urls[0]}/LOGS/rules/{rule.rule_id}.html"


def test_join_timeout_and_forgotten_rule(cluster, rule_server, data_server):
    rule = rules.RecipeRule(recipe="- a: b\n", inputs={"input": [SERIES]}, cluster=cluster).push()
    with pytest.raises(TimeoutError):
        rule.join(timeout=0.3, interval=0.05)
    # the rule server restarts and forgets the rule: join() raises instead of looping forever
    from cluster.ruleserver import RuleServer
    with RuleServer() as fresh:
        rule._cluster = rules.Cluster(fresh.url, data_server.url, serverfilter="testcluster")
        with pytest.raises(errors.ClusterError, match="no longer on the rule server"):
            rule.join(timeout=10, interval=0.05, grace=0.3)
    # seen finished, then dropped by the server (retention over): join() returns
    done = rules.RecipeRule(recipe="- a: b\n", inputs={"input": [SERIES]}, cluster=cluster).push()
    work(rule_server.url, done.rule_id)
    assert done.join(timeout=10, interval=0.05)["finished"] is True
    with RuleServer() as fresh:
        done._cluster = rules.Cluster(fresh.url, data_server.url, serverfilter="testcluster")
        assert done.join(timeout=10, interval=0.05, grace=0.3) == {"finished": True, "ID": done.rule_id}


def test_abort_inactivates(cluster, rule_server):
    rule = rules.RecipeRule(recipe="- a: b\n", inputs={"input": [SERIES]}, cluster=cluster).push()
    rule.abort()
    assert queue_info(rule_server.url)[rule.rule_id]["active"] is False
    assert advert_for(rule_server.url, rule.rule_id) is None


def test_recipe_parent_gives_child_context_and_patterns(cluster, rule_server):
    first = rules.RecipeRuleFactory(recipe="- a: b\n", inputs={"input": [SERIES]})
    first.chain(rules.RecipeRuleFactory(recipe="- c: d\n",
                                        input_patterns={"image": "{{spool_dir}}/{{series_stub}}.tif"}))
    rule = first.get_rule({"seriesName": SERIES}).push(cluster)
    child = json.loads(rule.rule["on_completion"]["template"])
    assert child["inputs"] == {"image": "PYME-CLUSTER://testcluster/pyme/series.tif"}
    assert "inputsByTask" not in rule.rule["on_completion"]


# ---------------------------------------------------------------------------- failures
def test_unreachable_server_raises_and_gives_no_id(fixture_series_root, data_server):
    dead = rules.Cluster(f"http://127.0.0.1:{free_port()}", data_server.url, serverfilter="testcluster")
    rule = rules.RecipeRule(recipe="- a: b\n", inputs={"input": [SERIES]})
    with pytest.raises(errors.ClusterUnreachable):
        rule.push(dead)
    assert rule.rule_id is None and not rule.releasing


def test_refused_request_raises(cluster, rule_server, data_server):
    # a data server is not a rule server: it refuses /add_integer_id_rule
    wrong = rules.Cluster(data_server.url, data_server.url, serverfilter="testcluster")
    rule = rules.RecipeRule(recipe="- a: b\n", inputs={"input": [SERIES]})
    with pytest.raises(errors.RequestRefused) as info:
        rule.push(wrong)
    assert info.value.status >= 400 and rule.rule_id is None
    # a 4xx from a rule server that does not know the rule, with its message
    rule = rules.RecipeRule(recipe="- a: b\n", inputs={"input": [SERIES]}, cluster=cluster).push()
    from cluster.ruleserver import RuleServer
    with RuleServer() as fresh:
        rule._cluster = rules.Cluster(fresh.url, data_server.url, serverfilter="testcluster")
        with pytest.raises(errors.RequestRefused) as info:
            rule.abort()
    assert 400 <= info.value.status < 500 and rule.rule_id in info.value.server_message


class _Garbage(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        body = b"<html>not json</html>"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args):
        pass


def test_garbage_replies_raise_protocol_error(fixture_series_root, data_server):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Garbage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        bad = rules.Cluster(url, data_server.url, serverfilter="testcluster")
        rule = rules.RecipeRule(recipe="- a: b\n", inputs={"input": [SERIES]})
        with pytest.raises(errors.ProtocolError):
            rule.push(bad)
        assert rule.rule_id is None
    finally:
        server.shutdown()
        server.server_close()

    # not even HTTP
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def answer():
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(b"garbage garbage\r\n\r\n")
        conn.close()

    threading.Thread(target=answer, daemon=True).start()
    try:
        bad = rules.Cluster(f"http://127.0.0.1:{listener.getsockname()[1]}", data_server.url)
        with pytest.raises(errors.ProtocolError):
            bad.rules.queue_info()
    finally:
        listener.close()


def test_h5r_metadata_uploaded(cluster, rule_server, data_root):
    rules.LocalisationRule(SERIES, ANALYSIS, cluster=cluster).push()

    def metadata_attr():
        path = data_root / "pyme/analysis/series.h5r"
        if not path.exists():
            return None
        try:
            with tables.open_file(str(path), "r") as h5:
                return h5.root.MetaData.Analysis._v_attrs["DetectionThreshold"]
        except (OSError, tables.NoSuchNodeError, KeyError, tables.HDF5ExtError):
            return None
    assert wait_for(metadata_attr, what="metadata in the results file") == 2.5


def test_cli_launch_and_watch(cluster, rule_server, data_server, tmp_path, capsys):
    from rules.cli import run_launch
    from rules.presets import save_preset
    preset = tmp_path / "chain.yaml"
    first = rules.LocalisationRuleFactory(analysisMetadata=ANALYSIS)
    first.chain(rules.RecipeRuleFactory(recipe="- a: b\n"))
    save_preset(preset, first)

    stop = threading.Event()

    def worker():
        while not stop.is_set():
            for rule_id in list(queue_info(rule_server.url)):
                work(rule_server.url, rule_id)
            stop.wait(0.05)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    try:
        code = run_launch([str(preset), "--series", SERIES, "--server", rule_server.url,
                           "--dataserver", data_server.url, "--serverfilter", "testcluster",
                           "--watch", "--interval", "0.1", "--timeout", "30"])
    finally:
        stop.set()
        thread.join(5)
    out = capsys.readouterr()
    assert code == 0, out
    assert "pushed rule 000000-" in out.out
    assert "step 2 " in out.out and "chain finished" in out.out

    assert run_launch([str(tmp_path / "missing.yaml"), "--series", SERIES]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing.yaml" in err and "Traceback" not in err
    dead = f"http://127.0.0.1:{free_port()}"
    assert run_launch([str(preset), "--series", SERIES, "--server", dead,
                       "--dataserver", data_server.url]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot reach" in err
