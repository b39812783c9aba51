"""Results tables for people: readable columns, the row count probe, paged reading (real server)."""
from __future__ import annotations

import numpy as np
import pytest

from cluster import h5r
from cluster.localisation.results import empty_results
from rules.dataserver_client import DataClient
from rules.result_tables import ResultTable, known_column, readable_columns, table_length


def _fits(n: int, start: int = 0) -> np.ndarray:
    records = empty_results(n)
    records["tIndex"] = np.arange(start, start + n)
    records["fitResults"]["x0"] = np.arange(start, start + n) * 10.0
    records["fitResults"]["y0"] = 5.0
    records["fitResults"]["A"] = 100.0
    records["fitResults"]["sigma"] = 130.0
    records["fitError"]["x0"] = 8.0
    records["fitError"]["y0"] = 12.0
    return records


def test_known_columns_get_units_and_unknown_ones_keep_their_name():
    assert known_column("area_nm2").label == "area [nm²]"
    assert known_column("x").label == "x [nm]" and known_column("x").unit == "nm"
    assert known_column("t").label == "frame"
    assert known_column("my_measure").label == "my_measure"


def test_fit_results_become_the_localisation_columns():
    columns, values = readable_columns(_fits(3))
    labels = [c.label for c in columns]
    assert labels[:3] == ["frame", "x [nm]", "y [nm]"] and "intensity [photon]" in labels
    assert list(values["x"]) == [0.0, 10.0, 20.0]
    assert values["uncertainty"][0] == pytest.approx(10.0)
    other = np.zeros(2, [("label", "i4"), ("area_nm2", "f8"), ("nested", [("a", "f4")])])
    columns, values = readable_columns(other)
    assert [c.label for c in columns] == ["label", "area [nm²]", "nested_a"]


@pytest.mark.parametrize("rows", [0, 1, 2, 3, 1000, 1025])
def test_table_length_probes_the_row_count(data_server, data_root, rows):
    if rows:
        h5r.append_table(data_root / "r.h5r", "FitResults", _fits(rows))
    else:
        h5r.append_table(data_root / "r.h5r", "Other", _fits(1))
        h5r.append_table(data_root / "r.h5r", "FitResults", _fits(1)[:0])
    with DataClient(data_server.url) as client:
        assert table_length(client, "r.h5r", "FitResults") == rows
        with pytest.raises(FileNotFoundError):
            table_length(client, "none.h5r", "FitResults")


def test_a_table_is_read_page_by_page_up_to_what_is_held(data_server, data_root):
    h5r.append_table(data_root / "a" / "r.h5r", "FitResults", _fits(2500))
    h5r.write_metadata(data_root / "a" / "r.h5r", {"voxelsize.x": 0.1, "Camera.ElectronsPerCount": 2.0})
    with DataClient(data_server.url) as client:
        reader = ResultTable(client, "PYME-CLUSTER:///a/r.h5r", first_rows=100, chunk_rows=700,
                             max_rows=2000)
        table = reader.open()
        assert (table.total, table.held, table.loaded) == (2500, 2000, 100)
        assert table.caption() == "2,500 rows (100 read so far)"
        assert reader.conversion.electrons_per_count == 2.0
        reads = 0
        while reader.read_more():
            reads += 1
        assert reads == 2 and table.complete and table.loaded == 2000  # 100 + 700 + 700 + 500
        assert table.caption() == "2,500 rows (the first 2,000 held)"
        assert np.array_equal(table.values["x"], np.arange(2000) * 10.0)
        assert table.values["x"].dtype == np.float32


def test_csv_tables_and_tables_that_are_not(data_server, data_root):
    (data_root / "b.csv").write_text("label,area_nm2\n1,2.5\n2,3.5\n")
    (data_root / "c.csv").write_text("")
    with DataClient(data_server.url) as client:
        table = ResultTable(client, "b.csv").open()
        assert [c.label for c in table.columns] == ["label", "area [nm²]"]
        assert table.complete and list(table.values["area_nm2"]) == [2.5, 3.5]
        with pytest.raises(ValueError):
            ResultTable(client, "c.csv").open()
