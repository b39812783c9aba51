"""ClusterSeries on PYME's fixture series and on a series being spooled, via the data server."""
from __future__ import annotations

import json

import pytest

from rules.dataserver_client import DataClient
from rules.metadata import MetaDataHandler
from rules.series import ClusterSeries


@pytest.fixture
def client(data_server, fixture_series_root):
    with DataClient(data_server.url, "testcluster") as data:
        yield data


def test_pyme_fixture_series(client, pyme_fixtures):
    series = ClusterSeries("PYME-CLUSTER://testcluster/pyme/series.pcs", client)
    assert series.n_frames == 8 and series.is_complete
    assert series.uri == "PYME-CLUSTER://testcluster/pyme/series.pcs"
    md = series.metadata()
    assert isinstance(md, MetaDataHandler) and md["Camera.ElectronsPerCount"] == 0.5
    assert series.events() == json.loads((pyme_fixtures / "series.pcs" / "events.json").read_text())
    assert series.frame_bytes(7) == (pyme_fixtures / "series.pcs" / "frame00007.pzf").read_bytes()
    with pytest.raises(FileNotFoundError):
        series.frame_bytes(8)


def test_series_being_spooled(client, pyme_fixtures):
    source = pyme_fixtures / "series.pcs"
    client.put_file("live/s1.pcs/metadata.json", (source / "metadata.json").read_bytes())
    series = ClusterSeries("live/s1.pcs", client, max_age=0.0)
    assert series.n_frames == 0 and not series.is_complete and series.events() == []
    for i in range(3):
        client.put_file(f"live/s1.pcs/frame{i:05d}.pzf", (source / f"frame{i:05d}.pzf").read_bytes())
    assert series.n_frames == 3 and not series.is_complete
    for i in range(3, 5):
        client.put_file(f"live/s1.pcs/frame{i:05d}.pzf", (source / f"frame{i:05d}.pzf").read_bytes())
    client.put_file("live/s1.pcs/events.json", b'[["StartAq", "0", 1.0]]')
    assert series.is_complete and series.n_frames == 5
    assert series.events() == [["StartAq", "0", 1.0]]


class LateFrameClient(DataClient):
    """A frame lands right after the listing in which events.json is first seen (§8.16)."""

    late = None

    def listdirectory(self, path="", *, fresh=False):
        listing = super().listdirectory(path, fresh=fresh)
        if "events.json" in listing and self.late is not None:
            late, self.late = self.late, None
            self.put_file(late, b"late frame")
        return listing


def test_count_is_relisted_when_the_series_completes(data_server):
    with LateFrameClient(data_server.url, "testcluster") as client:
        client.put_file("s/a.pcs/metadata.json", b"{}")
        client.put_file("s/a.pcs/frame00000.pzf", b"f")
        series = ClusterSeries("s/a.pcs", client, max_age=0.0)
        assert series.n_frames == 1
        client.put_file("s/a.pcs/events.json", b"[]")
        client.late = "s/a.pcs/frame00001.pzf"
        assert series.is_complete
        assert series.n_frames == 2  # the listing taken with events.json saw only 1
        client.put_file("s/a.pcs/frame00002.pzf", b"f")
        assert series.n_frames == 2  # complete means final: no more listings
