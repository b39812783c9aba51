"""Bounded parsing: YAML bombs, deep JSON and lying .npy headers are refused quickly with a clear
message (a 4xx from the servers), never a traceback, a 500 or gigabytes of memory."""
from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
import requests

from cluster.recipes.errors import RecipeError
from cluster.recipes.parser import parse_recipe
from rules.presets import PresetError, load_preset
from rules.recipe_check import check_recipe
from rules.safeload import LoadLimitError, load_json, load_yaml

LAUGHS = "\n".join(["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
                   + [f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]"
                      for i in range(8)]) + "\n"
RECIPE_BOMB = ("- localisations.AddPipelineDerivedVars:\n    inputFitResults: " "&x [1, 2]\n"
               + "".join(f"    p{i}: &x{i} [" + ", ".join(["*x" if i == 0 else f"*x{i - 1}"] * 9)
                         + "]\n" for i in range(8)))


def _quickly(function, *args, seconds: float = 0.5):
    started = time.monotonic()
    with pytest.raises(Exception) as info:
        function(*args)
    assert time.monotonic() - started < seconds
    return info.value


def test_billion_laughs_refused_by_the_one_loader():
    error = _quickly(load_yaml, LAUGHS)
    assert isinstance(error, LoadLimitError) and "aliases" in str(error)
    assert load_yaml("a: &a [1, 2]\nb: *a\n") == {"a": [1, 2], "b": [1, 2]}  # plain aliases load


def test_recursive_alias_and_deep_yaml_refused():
    assert "recursive" in str(_quickly(load_yaml, "a: &a [*a]\n"))
    # PyYAML's scanner looks up to 1,024 characters ahead for a key: ~0.3 s here, bounded.
    assert "deeper" in str(_quickly(load_yaml, "[" * 5000 + "]" * 5000, seconds=2))


def test_yaml_bomb_in_a_preset_is_a_preset_error(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(LAUGHS)
    error = _quickly(load_preset, path)
    assert isinstance(error, PresetError) and "nodes" in str(error)


def test_yaml_bomb_in_a_recipe_refused_by_worker_parser_and_editor_check():
    error = _quickly(parse_recipe, RECIPE_BOMB)
    assert isinstance(error, RecipeError) and "nodes" in str(error)
    started = time.monotonic()
    problems = check_recipe(RECIPE_BOMB)
    assert time.monotonic() - started < 0.5
    assert problems and "nodes" in problems[0].message


def test_deep_json_refused():
    assert "deeper" in str(_quickly(load_json, "[" * 100_000 + "]" * 100_000))
    assert "deeper" in str(_quickly(load_json, '{"a":' * 150 + "1" + "}" * 150))
    assert load_json(b'{"a": [1, {"b": 2}]}') == {"a": [1, {"b": 2}]}


# -- through the servers ----------------------------------------------------------------------
def test_rule_server_refuses_deep_rules_with_400(rule_server):
    url = rule_server.url + "/add_integer_id_rule"
    deep = "[" * 100_000 + "]" * 100_000
    reply = requests.post(url, data=deep, timeout=10)
    assert reply.status_code == 400 and "deeper" in reply.json()["error"]
    nested = {"template": "{}", "on_completion": {"template": "{}", "x": json.loads("[" * 200
                                                                                  + "]" * 200)}}
    reply = requests.post(url, data=json.dumps(nested), timeout=10)
    assert reply.status_code == 400 and "deeper" in reply.json()["error"]


def test_data_server_refuses_deep_metadata_and_records_with_400(data_root, data_server):
    base = data_server.url + "/__aggregate_h5r/r.h5r/"
    deep = "{\"a\": " * 100_000 + "1" + "}" * 100_000
    reply = requests.put(base + "MetaData", data=deep, timeout=10)
    assert reply.status_code == 400 and "deeper" in reply.json()["error"]
    reply = requests.put(base + "FitResults", data="[" + deep + "]", timeout=10)
    assert reply.status_code == 400 and "deeper" in reply.json()["error"]
    assert not (data_root / "r.h5r").exists()


def test_npy_header_must_match_the_body(data_root, data_server):
    records = np.zeros(3, dtype=[("x", "<f4"), ("y", "<f4")])
    buffer = io.BytesIO()
    np.save(buffer, records)
    good = buffer.getvalue()
    lying = good.replace(b"(3,)", b"(1000000000000,)")
    url = data_server.url + "/__aggregate_h5r/r.h5r/FitResults"
    reply = requests.put(url, data=lying, timeout=10)
    assert reply.status_code == 400 and "header describes" in reply.json()["error"]
    reply = requests.put(url, data=good[:-4], timeout=10)
    assert reply.status_code == 400
    assert requests.put(url, data=good, timeout=10).status_code == 200


def test_oversized_metadata_value_is_400(data_root, data_server):
    url = data_server.url + "/__aggregate_h5r/r.h5r/MetaData"
    reply = requests.put(url, data=json.dumps({"Sample.Notes": "x" * (10 << 20)}), timeout=10)
    assert reply.status_code == 400 and "limit of an HDF5 attribute" in reply.json()["error"]
    assert requests.put(url, data=json.dumps({"Sample.Notes": "x" * 1000}),
                        timeout=10).status_code == 200
