"""PYME's pickled numpy uploads to ``__aggregate_h5r``: accepted the way PYME's workers and
``clusterResults.fileResults`` send them, and nothing but numpy arrays is ever unpickled."""
from __future__ import annotations

import gzip
import os
import pickle

import numpy as np
import pytest
import requests

from cluster import h5r
from rules.localisation import EVENTS_DTYPE


def _pyme_worker_body(records: np.ndarray) -> bytes:
    """What a PYME worker PUTs: ``ndarray.dumps()`` (pickle protocol 2), gzip-compressed."""
    return gzip.compress(pickle.dumps(records, protocol=2))


def _as_numpy1_pickle(body: bytes) -> bytes:
    """The same protocol-2 pickle as numpy 1.x writes it (``numpy.core`` module names)."""
    return body.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def test_pyme_worker_fit_results_are_appended(data_root, data_server, pyme_fixtures):
    fits = h5r.read_table(pyme_fixtures / "results.h5r", "FitResults")
    url = data_server.url + "/__aggregate_h5r/pyme/analysis/s.h5r/FitResults"
    bodies = [_pyme_worker_body(fits[:2]),
              gzip.compress(_as_numpy1_pickle(pickle.dumps(fits[2:4], protocol=2))),
              pickle.dumps(fits[4:].view(np.recarray), protocol=5)]
    assert b"numpy.core.multiarray" in gzip.decompress(bodies[1])
    for body in bodies:
        headers = {"Content-Encoding": "gzip"} if body[:2] == b"\x1f\x8b" else {}
        reply = requests.put(url, data=body, headers=headers)
        assert reply.status_code == 200, reply.text
    stored = h5r.read_table(data_root / "pyme" / "analysis" / "s.h5r", "FitResults")
    assert stored.dtype == fits.dtype
    np.testing.assert_array_equal(stored, fits)


def test_pyme_client_events_record_array_makes_the_events_table(data_root, data_server):
    events = np.zeros(2, dtype=EVENTS_DTYPE).view(np.recarray)
    events["EventName"], events["Time"] = [b"StartAq", b"StopAq"], [1700000000.0, 1700000009.5]
    url = data_server.url + "/__aggregate_h5r/pyme/analysis/s.h5r/Events"
    assert requests.put(url, data=pickle.dumps(events, protocol=2)).status_code == 200
    stored = h5r.read_table(data_root / "pyme" / "analysis" / "s.h5r", "Events")
    assert stored["EventName"].tolist() == [b"StartAq", b"StopAq"]
    assert stored["Time"].tolist() == [1700000000.0, 1700000009.5]


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


@pytest.mark.parametrize("body, status, words", [
    (pickle.dumps(_RunsCode(), protocol=2), 415, "posix.system"),
    (pickle.dumps({"results": np.zeros(2)}, protocol=2), 415, "dict"),
    (pickle.dumps(np.array([1, None], dtype=object), protocol=2), 415, "Python objects"),
    (pickle.dumps(np.zeros(2, dtype=[("a", "O")]), protocol=4), 415, "Python objects"),
    (pickle.dumps(np.arange(4), protocol=2), 400, "structured array"),
    (pickle.dumps(np.zeros(3, [("x", "<f4")]), protocol=2)[:40], 400, "not a valid numpy"),
])
def test_anything_but_a_numpy_record_array_is_refused(data_root, data_server, body, status, words):
    url = data_server.url + "/__aggregate_h5r/bad/s.h5r/FitResults"
    reply = requests.put(url, data=body)
    assert reply.status_code == status
    assert words in reply.json()["error"]
    assert not (data_root / "bad" / "s.h5r").exists()
    assert not (data_root / "pwned").exists() and not os.path.exists("pwned")
