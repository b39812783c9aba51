"""Presets: save → load round trip, rename, delete, import from a PYME config folder."""
from __future__ import annotations

import pathlib

import pytest
from helpers import PYME_PRESET

from resources import resource_path
from rules.chain import LOCALISATION, RECIPE, from_factories
from rules.presets import PresetError, load_preset
from widgets.chain_editor import ChainEditor
from widgets.chain_model import ChainModel
from widgets.presets_menu import PresetsMenu, PresetStore


@pytest.fixture
def chain(qtbot):
    model = ChainModel(from_factories(load_preset(resource_path("presets", "default.yaml"))))
    editor = ChainEditor(model)
    qtbot.addWidget(editor)
    return editor


@pytest.fixture
def menu(qtbot, tmp_path, chain):
    menu = PresetsMenu(PresetStore(tmp_path / "config" / "chained_analysis"),
                       lambda: chain.model.to_factories())
    qtbot.addWidget(menu)
    return menu


def test_save_then_load_round_trip(qtbot, chain, menu, tmp_path):
    with qtbot.waitSignal(menu.message, timeout=2000) as saved_plain:
        assert menu.save("plain")
    assert saved_plain.args == ["Saved preset 'plain'"] and menu.pyme_differences == []

    chain.select_row(0)
    chain.localisation_editor.threshold.setValue(2.5)
    chain.select_row(1)
    chain.recipe_editor.set_input_pattern("extra", "{{spool_dir}}/other.tif")
    saved = chain.model.steps
    with qtbot.waitSignal(menu.message, timeout=2000) as said:
        assert menu.save("my chain")
    # Spoolside runs it, but PYME never reads input_patterns: said at save time
    assert said.args[0].startswith("Saved preset 'my chain' — PYME would run it differently: "
                                   "step 2: PYME never reads input_patterns")
    assert (tmp_path / "config" / "chained_analysis" / "my chain.yaml").is_file()
    assert menu.store.names() == ["my chain", "plain"]
    assert [a.text() for a in menu.load_menu.actions()] == ["my chain", "plain"]

    chain.model.set_steps([])
    with qtbot.waitSignal(menu.presetLoaded, timeout=2000) as blocker:
        assert menu.load("my chain")
    name, factories = blocker.args
    assert name == "my chain"
    chain.model.set_factories(factories)
    loaded = chain.model.steps
    assert [s.kind for s in loaded] == [LOCALISATION, RECIPE]
    assert [(s.recipe, s.input_patterns, s.output_dir, s.analysis) for s in loaded] == \
        [(s.recipe, s.input_patterns, s.output_dir, s.analysis) for s in saved]
    assert loaded[0].analysis["Analysis.DetectionThreshold"] == 2.5


def test_saving_a_chain_pyme_runs_differently_warns_without_blocking(qtbot, tmp_path):
    from PyQt5.QtWidgets import QWidget
    old = load_preset(pathlib.Path(__file__).parent / "fixtures" / "old_default_preset.yaml")
    window = QWidget()
    qtbot.addWidget(window)
    menu = PresetsMenu(PresetStore(tmp_path / "presets"), lambda: old, window)
    window.show()
    assert menu.save("old")   # a modal dialog here would fail the test
    box = menu.difference_box
    assert box is not None and box.isVisible() and not box.isModal()
    assert "step 3 follows a recipe step" in box.text() and "output_dir" in box.text()
    box.close()


def test_rename_and_delete(menu):
    assert menu.save("first")
    menu.store.rename("first", "second")
    assert menu.store.names() == ["second"]
    assert menu.save("third")
    with pytest.raises(PresetError):
        menu.store.rename("second", "third")
    menu.store.delete("second")
    assert menu.store.names() == ["third"]
    with pytest.raises(PresetError):
        menu.store.path("../escape")


def test_unusable_preset_gives_a_message(qtbot, menu):
    menu.store.folder.mkdir(parents=True)
    (menu.store.folder / "broken.yaml").write_text("- - os.system\n  - {}\n")
    with qtbot.waitSignal(menu.message, timeout=2000) as blocker:
        assert not menu.load("broken")
    assert "broken" in blocker.args[0]


def test_import_from_a_pyme_config_folder(menu, tmp_path):
    pyme = tmp_path / "dotPYME"
    (pyme / "chained_analysis").mkdir(parents=True)
    (pyme / "chained_analysis" / "default.yaml").write_text(PYME_PRESET)
    assert menu.save("default")
    names, problems = menu.store.import_folder(pyme)
    assert names == ["default_1"] and problems == []
    steps = from_factories(menu.store.load("default_1"))
    assert [s.kind for s in steps] == [LOCALISATION, RECIPE]
    assert steps[0].factory_class == "SpoolLocalLocalizationRuleFactory"
    assert steps[0].analysis["Analysis.BGRange"] == [-30, 0]
    # Saved back in the same PYME form, class names and all.
    text = menu.store.path("default_1").read_text()
    assert text.startswith("- - SpoolLocalLocalizationRuleFactory")
