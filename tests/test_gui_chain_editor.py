"""The chain model and editor: build, reorder, and problems shown in place before launch."""
from __future__ import annotations

import pathlib

from PyQt5.QtCore import QModelIndex, Qt

from resources import resource_path
from rules.chain import LOCALISATION, RECIPE, ChainStep, from_factories
from rules.factories import LocalisationRuleFactory, RecipeRuleFactory
from widgets.chain_editor import ChainEditor, bundled_recipes
from widgets.chain_model import ChainModel

SERIES = "PYME-CLUSTER://testcluster/sim/cells_01.pcs"
H5R = "{{spool_dir}}/analysis/{{series_stub}}.h5r"
TIF = "{{spool_dir}}/analysis/{{series_stub}}.tif"


def _editor(qtbot, steps=None) -> ChainEditor:
    editor = ChainEditor(ChainModel(steps))
    qtbot.addWidget(editor)
    editor.resize(500, 700)
    return editor


def _pick_bundled(editor: ChainEditor, name: str) -> None:
    picker = editor.recipe_editor.recipe_picker
    index = picker.findText(f"Bundled: {name}")
    assert index >= 0, [picker.itemText(i) for i in range(picker.count())]
    picker.setCurrentIndex(index)
    picker.activated.emit(index)


def _build_default_chain(qtbot, editor: ChainEditor) -> None:
    qtbot.mouseClick(editor.add_localisation_button, Qt.LeftButton)
    editor.localisation_editor.threshold.setValue(1.5)
    editor.localisation_editor.start_at.setValue(5)
    qtbot.mouseClick(editor.add_recipe_button, Qt.LeftButton)
    _pick_bundled(editor, "render_and_measure_blobs")


def _shown(label) -> str:
    return label.text().replace("\u200b", "")


def test_build_default_chain_through_the_widgets(qtbot):
    editor = _editor(qtbot)
    _build_default_chain(qtbot, editor)
    steps = editor.model.steps
    assert [s.kind for s in steps] == [LOCALISATION, RECIPE]
    assert steps[0].analysis["Analysis.DetectionThreshold"] == 1.5
    assert steps[0].analysis["Analysis.StartAt"] == 5
    recipes = bundled_recipes()
    assert steps[1].recipe == recipes["render_and_measure_blobs"].read_text(encoding="utf-8")
    # as PYME runs a step: the localisation's results as input, the series folder as output_dir
    assert steps[1].input_patterns == {} and steps[1].output_dir == ""
    assert "localisation's results file" in _shown(editor.recipe_editor.passed_input)
    editor.set_series(SERIES)
    assert editor.validate_now() == []
    assert _shown(editor.recipe_editor.passed_input).startswith(
        "input ← PYME-CLUSTER://testcluster/sim/analysis/cells_01.h5r")
    assert _shown(editor.recipe_editor.output_preview) == \
        "→ PYME-CLUSTER://testcluster/sim (the series folder)"
    assert _shown(editor.recipe_editor.writes_preview) == \
        "Writes → sim/analysis/cells_01.tif, sim/analysis/cells_01_blobs.csv"

    factories = editor.model.to_factories()
    assert [type(f) for f in factories] == [LocalisationRuleFactory, RecipeRuleFactory]
    assert factories[0].on_completion is factories[1]
    assert factories[0].kwargs["analysisMetadata"]["Analysis.DetectionThreshold"] == 1.5
    assert "input_patterns" not in factories[1].kwargs and "output_dir" not in factories[1].kwargs

    # a recipe after a recipe reads nothing unless a pattern names its input (Spoolside only)
    qtbot.mouseClick(editor.add_recipe_button, Qt.LeftButton)
    _pick_bundled(editor, "measure_blobs")
    problems = editor.validate_now()
    assert [(p.row, p.field) for p in problems] == [(2, "input:input")]
    assert "gets no input" in problems[0].message
    assert _shown(editor.recipe_editor.passed_input).startswith("input ← nothing")
    editor.recipe_editor.set_input_pattern("input", TIF)
    assert editor.validate_now() == []
    assert editor.recipe_editor.passed_input.isHidden()


def test_duplicate_and_remove_buttons(qtbot):
    editor = _editor(qtbot, [ChainStep.localisation(), ChainStep.recipe_step(recipe="- a.B: {}\n")])
    editor.select_row(1)
    qtbot.mouseClick(editor.duplicate_button, Qt.LeftButton)
    assert [s.recipe for s in editor.model.steps] == ["", "- a.B: {}\n", "- a.B: {}\n"]
    assert editor.current_row() == 2
    editor.select_row(0)
    qtbot.mouseClick(editor.remove_button, Qt.LeftButton)
    assert [s.kind for s in editor.model.steps] == [RECIPE, RECIPE]


def test_chain_model_passes_qt_checks(qtmodeltester):
    model = ChainModel(from_factories(_default_factories()))
    qtmodeltester.check(model)


def _default_factories():
    from rules.presets import load_preset
    return load_preset(resource_path("presets", "default.yaml"))


def test_drag_reorder_changes_the_factories(qtbot):
    from rules.presets import load_preset
    # the old three-step default (render, then measure the rendered TIFF): Spoolside-only
    old = load_preset(pathlib.Path(__file__).parent / "fixtures" / "old_default_preset.yaml")
    editor = _editor(qtbot, from_factories(old))
    model = editor.model
    editor.set_series(SERIES)
    assert editor.validate_now() == []
    before = [f.kwargs.get("input_patterns") for f in model.to_factories()]

    # Drag the measure step (row 2) above the render step (row 1), as the list view does.
    mime = model.mimeData([model.index(2)])
    assert model.canDropMimeData(mime, Qt.MoveAction, 1, 0, QModelIndex())
    assert model.supportedDropActions() == Qt.MoveAction
    model.dropMimeData(mime, Qt.MoveAction, 1, 0, QModelIndex())

    after = [f.kwargs.get("input_patterns") for f in model.to_factories()]
    assert after == [before[0], before[2], before[1]]
    assert model.rowCount() == 3
    # The measure step now reads a .tif nothing before it writes: flagged at its input.
    problems = editor.validate_now()
    assert [(p.row, p.field) for p in problems] == [(1, "input:input")]
    assert "no earlier step produces sim/analysis/cells_01.tif" in problems[0].message
    assert "⚠" in model.data(model.index(1))

    # And back again with moveRows (drop at the end).
    assert model.move_step(1, 2)
    assert [f.kwargs.get("input_patterns") for f in model.to_factories()] == before
    assert editor.validate_now() == []


def test_bad_yaml_is_flagged_at_its_line(qtbot):
    editor = _editor(qtbot, [ChainStep.recipe_step(recipe="- output.CSVOutput: {}\n")])
    editor.select_row(0)
    qtbot.waitUntil(lambda: editor.problems() == [], timeout=3000)
    text = ("- filters.GaussianFilter:\n"
            "    inputName: input\n"
            "    sigmaX: [2.0\n"
            "    outputName: smoothed\n")
    editor.recipe_editor.yaml_edit.setPlainText(text)
    assert editor.model.step(0).recipe == text
    # Checked after a pause in typing (debounced), then shown next to the editor.
    qtbot.waitUntil(lambda: editor.problems() != [], timeout=3000)
    problem, = editor.problems()
    assert problem.field == "recipe"
    assert problem.line in (3, 4)
    assert "does not parse" in problem.message
    assert editor.recipe_editor.marked_lines() == [problem.line]
    label = editor.recipe_editor.recipe_problems
    assert not label.isHidden() and f"line {problem.line}" in label.text()

    editor.recipe_editor.yaml_edit.setPlainText(text.replace("[2.0", "2.0"))
    qtbot.waitUntil(lambda: editor.problems() == [], timeout=3000)
    assert editor.recipe_editor.marked_lines() == []
    assert editor.recipe_editor.recipe_problems.isHidden()


def test_unknown_variable_is_flagged_and_previews_resolve(qtbot):
    editor = _editor(qtbot, [ChainStep.recipe_step(recipe="- output.CSVOutput: {}\n",
                                                   input_patterns={"input": H5R},
                                                   output_dir="{{spool_dir}}/analysis")])
    editor.select_row(0)
    editor.set_series(SERIES)
    table = editor.recipe_editor.inputs_table
    assert table.item(0, 2).text() == "PYME-CLUSTER://testcluster/sim/analysis/cells_01.h5r"
    assert _shown(editor.recipe_editor.output_preview) == "→ PYME-CLUSTER://testcluster/sim/analysis"

    editor.recipe_editor.set_input_pattern("input", "{{spool_dir}}/{{series_stubb}}.h5r")
    qtbot.waitUntil(lambda: editor.problems() != [], timeout=3000)
    problem, = editor.problems()
    assert problem.field == "input:input"
    assert "{{series_stubb}}" in problem.message and "{{series_stub}}" in problem.message
    assert "series_stubb" in table.item(0, 1).toolTip()
    assert table.item(0, 2).text().startswith("⚠")
    assert not editor.recipe_editor.inputs_problems.isHidden()
    assert editor.model.step(0).input_patterns == {"input": "{{spool_dir}}/{{series_stubb}}.h5r"}


def test_module_the_cluster_cannot_run_is_flagged(qtbot):
    editor = _editor(qtbot, [ChainStep.recipe_step(recipe="- measurement.Measure2D: {}\n"
                                                          "- fancy.Deconvolve: {}\n")])
    editor.set_available_modules({"measurement.Measure2D"})
    qtbot.waitUntil(lambda: editor.problems() != [], timeout=3000)
    problem, = editor.problems()
    assert problem.line == 2 and "fancy.Deconvolve" in problem.message


def test_empty_recipe_and_bad_localisation_settings(qtbot):
    steps = [ChainStep.localisation({"Analysis.FitModule": "LatGaussFitFR",
                                     "Analysis.DetectionThreshold": 1.0,
                                     "Analysis.BGRange": [0, -5]}),
             ChainStep.recipe_step()]
    editor = _editor(qtbot, steps)
    problems = editor.validate_now()
    assert {(p.row, p.field) for p in problems} == {(0, "analysis"), (1, "recipe")}
    assert editor.summary_label.text() == "⚠ 2 problem(s) in step 1, 2"


def test_a_long_series_name_wraps_in_the_writes_box_instead_of_being_clipped(qtbot):
    editor = _editor(qtbot, from_factories(_default_factories()))
    editor.resize(360, 700)
    editor.show()
    long_series = ("PYME-CLUSTER://lab-pc/microscope/"
                   "a_rather_long_series_name_from_the_lab_2026_11_30_cells01withnounderscores.pcs")
    editor.set_series(long_series)
    editor.select_row(0)
    writes = editor.localisation_editor.results_preview
    qtbot.waitUntil(lambda: writes.isVisible() and writes.width() > 0, timeout=3000)
    assert writes.minimumSizeHint().width() <= writes.width()
    assert "analysis/a_rather_long_series_name" in writes.toolTip()   # the plain path to copy
    editor.select_row(1)
    editor.validate_now()
    passed = editor.recipe_editor.passed_input
    qtbot.waitUntil(lambda: passed.isVisible(), timeout=3000)
    assert passed.minimumSizeHint().width() <= passed.width()
