"""The metadata panel: typed values with units, invalid values flagged in place and never exported."""
from __future__ import annotations

import json

import pytest

from rules.settings import parse_setting
from widgets.metadata_panel import INVALID_BRUSH, MetadataModel, MetadataPanel


def _panel(qtbot) -> MetadataPanel:
    panel = MetadataPanel()
    qtbot.addWidget(panel, before_close_func=lambda widget: widget.stop())
    return panel


def _load(qtbot, panel: MetadataPanel, path) -> None:
    panel.load_file(str(path))
    qtbot.waitUntil(lambda: panel.status_label.text().startswith("Metadata of"), timeout=5000)


def test_loads_series_metadata_json_with_types_and_units(qtbot, pyme_fixtures):
    panel = _panel(qtbot)
    _load(qtbot, panel, pyme_fixtures / "series.pcs" / "metadata.json")
    expected = json.loads((pyme_fixtures / "series.pcs" / "metadata.json").read_text())
    model = panel.model
    assert model.metadata() == expected
    assert model.problems() == [] and model.edited() == {}
    index = model.value_index("voxelsize.x")
    assert index.siblingAtColumn(2).data() == "float"
    assert index.siblingAtColumn(3).data() == "µm"
    assert model.value_index("Camera.ADOffset").siblingAtColumn(3).data() == "ADU"
    assert index.parent().data() == "voxelsize"


def test_shows_the_camera_map_ids_of_an_scmos_series(qtbot, tmp_path):
    md = {"Camera.DarkMapID": "PYME-CLUSTER://lab/maps/dark_1.tif",
          "Camera.VarianceMapID": "PYME-CLUSTER://lab/maps/variance_1.tif",
          "Camera.FlatfieldMapID": "<none>", "Camera.ROIPosX": 1}
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps(md))
    panel = _panel(qtbot)
    _load(qtbot, panel, path)
    model = panel.model
    assert model.metadata() == md and model.problems() == []
    dark = model.value_index("Camera.DarkMapID")
    assert dark.data() == md["Camera.DarkMapID"] and dark.parent().data() == "Camera"
    assert dark.siblingAtColumn(3).data() == "map: offset, ADU"
    assert "variance" in model.value_index("Camera.VarianceMapID").siblingAtColumn(3).data()


def test_invalid_values_are_flagged_and_not_exported(qtbot, pyme_fixtures, tmp_path):
    panel = _panel(qtbot)
    _load(qtbot, panel, pyme_fixtures / "series.pcs" / "metadata.json")
    model = panel.model
    original = model.metadata()["voxelsize.x"]
    with qtbot.waitSignal(model.problemsChanged, timeout=2000) as blocker:
        model.set_text("voxelsize.x", "abc")
    assert blocker.args[0] == [("voxelsize.x", "voxelsize.x must be a number, not 'abc'")]
    assert "voxelsize.x" not in model.metadata()
    assert model.value_item("voxelsize.x").background() == INVALID_BRUSH
    assert "will not be sent" in model.value_item("voxelsize.x").toolTip()
    assert panel.status_label.text().startswith("⚠")

    model.set_text("voxelsize.x", "-0.1")
    assert model.problems() == [("voxelsize.x", "voxelsize.x must be above 0, not -0.1")]
    model.set_text("Analysis.BGRange", "[0, -3]")
    assert dict(model.problems())["Analysis.BGRange"].startswith("Analysis.BGRange: the first frame offset")

    saved = tmp_path / "out.json"
    panel.save_file(str(saved))
    written = json.loads(saved.read_text())
    assert "voxelsize.x" not in written and "Analysis.BGRange" not in written
    assert written["Camera.ADOffset"] == 100.0

    with qtbot.waitSignal(panel.analysisEdited, timeout=2000) as edited:
        model.set_text("Analysis.BGRange", "[-20, 0]")
    assert edited.args[0]["Analysis.BGRange"] == [-20, 0]
    model.set_text("voxelsize.x", str(original * 2))
    assert model.problems() == []
    assert model.edited() == {"voxelsize.x": original * 2, "Analysis.BGRange": [-20, 0]}


def test_bad_value_in_a_loaded_file_is_flagged(qtbot, tmp_path):
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps({"Camera.ElectronsPerCount": "lots", "voxelsize.x": 0.1,
                                "Custom.Note": "kept"}))
    panel = _panel(qtbot)
    _load(qtbot, panel, path)
    assert [k for k, _ in panel.model.problems()] == ["Camera.ElectronsPerCount"]
    assert panel.model.metadata() == {"voxelsize.x": 0.1, "Custom.Note": "kept"}


def test_unreadable_file_gives_a_message(qtbot, tmp_path):
    panel = _panel(qtbot)
    (tmp_path / "broken.json").write_text("{not json")
    panel.load_file(str(tmp_path / "broken.json"))
    qtbot.waitUntil(lambda: panel.status_label.text().startswith("Could not load"), timeout=5000)


def test_parse_value_types():
    assert parse_setting("Analysis.StartAt", "12") == 12
    assert parse_setting("Analysis.SNRThreshold", "yes") is True
    assert parse_setting("Analysis.BGRange", "[-30, 0]") == [-30, 0]


def test_metadata_model_passes_qt_checks(qtmodeltester):
    model = MetadataModel()
    model.set_metadata({"Camera.ADOffset": 100.0, "voxelsize.x": 0.1, "Top": 1})
    qtmodeltester.check(model)


def test_a_failed_save_leaves_no_file_and_an_existing_one_intact(qtbot, tmp_path, monkeypatch):
    panel = _panel(qtbot)
    panel.model.set_metadata({"voxelsize.x": 0.1, "Custom.Note": "kept"})
    target = tmp_path / "metadata.json"
    target.write_text('{"old": 1}')
    with monkeypatch.context() as patch, pytest.raises(ValueError, match="JSON"):
        patch.setattr(panel.model, "metadata", lambda: {"bad": object()})
        panel.save_file(str(target))
    assert target.read_text() == '{"old": 1}' and sorted(p.name for p in tmp_path.iterdir()) == [
        "metadata.json"]
    panel.save_file(str(target))
    assert json.loads(target.read_text()) == {"Custom.Note": "kept", "voxelsize.x": 0.1}
    with pytest.raises(OSError):
        panel.save_file(str(tmp_path / "no" / "such" / "folder.json"))


@pytest.mark.parametrize("key, text", [
    ("Analysis.ROISize", "1"), ("Analysis.ROISize", "1000000"), ("Analysis.DetectionThreshold", "0"),
    ("Analysis.BGRange", "[0, -3]"), ("Analysis.BGRange", "[-5000, 0]"),
    ("Analysis.FitModule", "Nope"), ("voxelsize.x", "0"), ("Camera.ElectronsPerCount", "0"),
    ("Analysis.PSFSigmaGuess", "two")])
def test_every_value_a_worker_refuses_is_flagged_where_it_is_typed(qtbot, key, text):
    from cluster.localisation import FitSettings, LocalisationError
    md = {"Analysis.FitModule": "LatGaussFitFR", "voxelsize.x": 0.1, "voxelsize.y": 0.1}
    model = MetadataModel()
    model.set_metadata({**md, key: {"Analysis.BGRange": [-30, 0], "Analysis.FitModule": "LatGaussFitFR"}
                        .get(key, 5)})
    model.set_text(key, text)
    flagged = dict(model.problems())[key]
    try:
        value = json.loads(text)
    except ValueError:
        value = text
    with pytest.raises(LocalisationError) as refused:
        FitSettings.from_metadata({**md, key: value})
    assert flagged == str(refused.value)
