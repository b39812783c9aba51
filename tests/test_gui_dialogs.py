"""Dialogs: bad input is flagged where it is typed."""
from __future__ import annotations

import pytest

from rules.simulation import SimulationSettings, series_name_problem
from widgets.series_browser import SimulateDialog


@pytest.mark.parametrize("name, fragment", [("", "Type a name"), ("my~series", "'~'"),
                                            ("a b", "not allowed"), ("/abs", "'/'"),
                                            ("x/../y", "'..'")])
def test_bad_series_names_are_flagged_in_the_simulate_dialog(qtbot, name, fragment):
    dialog = SimulateDialog()
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.name_edit.setText(name)
    assert fragment in dialog.name_problem.text() and dialog.name_problem.isVisible()
    assert not dialog.ok_button.isEnabled()
    dialog.accept()
    assert dialog.result() != SimulateDialog.Accepted
    dialog.name_edit.setText("microscope/cells_02")
    assert not dialog.name_problem.isVisible() and dialog.ok_button.isEnabled()
    assert series_name_problem("microscope/cells_02") == ""
    assert dialog.values()[0] == "microscope/cells_02"


@pytest.mark.parametrize("rule, data, bad_field, fragment", [
    ("localhost:15346", "http://127.0.0.1:1", "rule", "http://"),
    ("http://host:99999", "http://127.0.0.1:1", "rule", "port"),
    ("http://host", "http://127.0.0.1:1", "rule", "needs a port"),
    ("http://127.0.0.1:1", "http://a:1, ftp://b:2", "data", "http://"),
    ("http://127.0.0.1:1/rules?x=1", "http://a:1", "rule", "just http://host:port"),
])
def test_connect_dialog_flags_bad_urls_in_place(qtbot, rule, data, bad_field, fragment):
    from widgets.server_dialog import ServerDialog
    dialog = ServerDialog()
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.rule_edit.setText(rule)
    dialog.data_edit.setText(data)
    label = dialog.rule_problem if bad_field == "rule" else dialog.data_problem
    other = dialog.data_problem if bad_field == "rule" else dialog.rule_problem
    assert fragment in label.text() and label.isVisible() and not other.isVisible()
    assert not dialog.ok_button.isEnabled()
    dialog.accept()
    assert dialog.result() != ServerDialog.Accepted
    dialog.rule_edit.setText("http://10.0.0.2:15346")
    dialog.data_edit.setText("http://10.0.0.2:15348; https://10.0.0.3:15348")
    assert dialog.ok_button.isEnabled()
    assert dialog.values() == ("http://10.0.0.2:15346",
                               ("http://10.0.0.2:15348", "https://10.0.0.3:15348"))


@pytest.mark.parametrize("name", ["a/b", " padded", "semi;colon", "~home"])
def test_preset_name_dialog_flags_unusable_names(qtbot, name):
    from widgets.presets_menu import PresetNameDialog, preset_name_problem
    dialog = PresetNameDialog("Save preset", name)
    qtbot.addWidget(dialog)
    dialog.show()
    assert dialog.problem.isVisible() and "letters, digits" in dialog.problem.text()
    assert not dialog.ok_button.isEnabled()
    dialog.name_edit.setText("STORM 2024-05 v1.2")
    assert not dialog.problem.isVisible() and dialog.ok_button.isEnabled()
    assert preset_name_problem(dialog.name()) == ""


def test_the_simulate_dialog_offers_a_free_name_and_flags_a_taken_one(qtbot):
    taken = {"sim/series_01.pcs", "sim/series_02.pcs"}
    dialog = SimulateDialog(taken=taken)
    qtbot.addWidget(dialog)
    dialog.show()
    assert dialog.values()[0] == "sim/series_03" and dialog.ok_button.isEnabled()
    dialog.name_edit.setText("sim/series_01")
    assert "already has" in dialog.name_problem.text() and not dialog.ok_button.isEnabled()


def test_the_simulate_dialog_asks_for_sample_and_camera_within_the_schema(qtbot):
    dialog = SimulateDialog()
    qtbot.addWidget(dialog)
    dialog.show()
    assert dialog.values()[1] == SimulationSettings()        # the simulator's defaults
    assert [dialog.camera.itemText(i) for i in range(dialog.camera.count())] == \
        ["sCMOS", "sCMOS with pixel maps", "EMCCD"]
    assert dialog.structure.findText("rings") >= 0
    dialog.structure.setCurrentText("rings")
    dialog.camera.setCurrentText("EMCCD")
    dialog.density.setValue(80)
    dialog.photons.setValue(400)
    dialog.background.setValue(5)
    dialog.fps.setValue(500)
    assert dialog.values()[1] == SimulationSettings(structure="rings", camera="EMCCD",
                                                    emitters_per_frame=80, photons=400,
                                                    background=5, fps=500)
    assert dialog.ok_button.isEnabled() and not dialog.settings_problem.isVisible()
    # the spin boxes stop at the schema's bounds
    dialog.photons.setValue(1)
    dialog.density.setValue(1e9)
    settings = dialog.settings()
    assert settings.photons == 10 and settings.emitters_per_frame == 1000
    assert settings.problems() == {}
