"""Dialogs: bad input is flagged where it is typed."""
from __future__ import annotations

import pytest

from widgets.series_browser import SimulateDialog, check_series_name


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
    assert check_series_name("microscope/cells_02") == ""
    assert dialog.values()[0] == "microscope/cells_02"
