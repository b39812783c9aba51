"""Editors for one step of the chain: a localisation step's settings, a recipe step's recipe,
input patterns and output folder. They emit plain changes; :mod:`widgets.chain_editor` applies
them to the chain model and shows the problems it finds back in them.
"""
from __future__ import annotations

import logging
from pathlib import Path

from PyQt5.QtCore import Qt, pyqtSignal
from PyQt5.QtGui import QColor, QFontDatabase, QTextCursor, QTextFormat
from PyQt5.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QTextEdit,
    QVBoxLayout,
    QWidget,
)

from rules.chain import ChainStep, StepProblem, bundled_name, resolve
from widgets.text_wrap import breakable

logger = logging.getLogger(__name__)

FIT_MODULES = ("LatGaussFitFR",)
RESULTS_TIP = ("The results file every task appends its localisations to (PYME's layout; an "
               "existing file is never overwritten)")
INLINE = "inline"
YAML_PLACEHOLDER = ("Type the recipe's YAML here, or pick a recipe above, e.g.\n"
                    "- localisations.AddPipelineDerivedVars: {inputFitResults: FitResults}")


def bundled_recipes() -> dict[str, Path]:
    """Recipes shipped in ``resources/recipes/``, by file stem."""
    from resources import resource_path
    folder = resource_path("recipes")
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))} if folder.is_dir() else {}


def problem_label() -> QLabel:
    label = QLabel()
    label.setWordWrap(True)
    label.setStyleSheet("color: #b00020;")
    label.setTextInteractionFlags(Qt.TextSelectableByMouse)
    label.hide()
    return label


def show_problem_list(label: QLabel, problems: list[StepProblem]) -> None:
    """``problems`` in ``label``: ⚠ for one that blocks a launch, ⓘ for a warning."""
    label.setText("\n".join(f"{'ⓘ' if p.warning else '⚠'} {p}" for p in problems))
    label.setVisible(bool(problems))


class LocalisationStepEditor(QWidget):
    """Edits a localisation step's ``Analysis.*`` settings.

    Signals
    -------
    analysisEdited(dict)
        The step's new ``Analysis.*`` settings.
    """

    analysisEdited = pyqtSignal(dict)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._loading = False
        self._analysis: dict = {}
        self.fit_module = QComboBox()
        self.fit_module.addItems(FIT_MODULES)
        self.fit_module.setToolTip("Analysis.FitModule: the fit applied to every candidate")
        self.threshold = QDoubleSpinBox()
        self.threshold.setRange(0.01, 1000.0)
        self.threshold.setDecimals(2)
        self.threshold.setSingleStep(0.1)
        self.threshold.setToolTip("Analysis.DetectionThreshold: 1.0 means 5 σ of the noise after "
                                  "the PSF-matched filter; higher finds fewer, brighter spots")
        self.bg_lo, self.bg_hi = QSpinBox(), QSpinBox()
        for box in (self.bg_lo, self.bg_hi):
            box.setRange(-10000, 10000)
            box.setToolTip("Analysis.BGRange: frames i+lo … i+hi−1 estimate the background")
        self.start_at = QSpinBox()
        self.start_at.setRange(0, 10_000_000)
        self.start_at.setToolTip("Analysis.StartAt: the first frame analysed (0 = from the start); "
                                 "earlier frames give no localisations")
        # narrow enough for the left pane of a 1024-px window (the ranges alone ask for more)
        for field_box in (self.bg_lo, self.bg_hi, self.start_at, self.threshold):
            field_box.setMinimumWidth(self.fontMetrics().horizontalAdvance("-000000") + 24)
        bg = QHBoxLayout()
        bg.addWidget(self.bg_lo)
        bg.addWidget(QLabel("to"))
        bg.addWidget(self.bg_hi)
        form = QFormLayout()
        form.setRowWrapPolicy(QFormLayout.WrapLongRows)  # labels above fields in a narrow pane
        form.addRow("Fit module", self.fit_module)
        form.addRow("Threshold (1 = 5 σ)", self.threshold)
        form.addRow("Background frames", bg)
        form.addRow("Start at frame", self.start_at)
        self.problems_label = problem_label()
        box = QGroupBox("Localisation: fit every frame")
        box.setLayout(form)
        self.results_preview = QLabel()
        self.results_preview.setWordWrap(True)
        self.results_preview.setMinimumWidth(120)  # a long series name must not widen the pane
        self.results_preview.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.results_preview.setToolTip(RESULTS_TIP)
        writes = QGroupBox("Writes")
        writes_layout = QVBoxLayout(writes)
        writes_layout.addWidget(self.results_preview)
        note = QLabel("One task per frame, released as frames arrive when the series is still "
                      "spooling. Camera settings and the other Analysis.* settings are in the "
                      "Metadata tab.")
        note.setWordWrap(True)
        note.setStyleSheet("color: gray;")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(box)
        layout.addWidget(writes)
        layout.addWidget(note)
        layout.addWidget(self.problems_label)
        layout.addStretch(1)
        self.set_series(None)
        self.fit_module.currentTextChanged.connect(self._on_changed)
        for box_ in (self.threshold, self.bg_lo, self.bg_hi, self.start_at):
            box_.valueChanged.connect(self._on_changed)

    def set_analysis(self, analysis: dict) -> None:
        self._loading = True
        try:
            self._analysis = dict(analysis)
            module = str(analysis.get("Analysis.FitModule", FIT_MODULES[0]))
            if self.fit_module.findText(module) < 0:
                self.fit_module.addItem(module)
            self.fit_module.setCurrentText(module)
            self.threshold.setValue(float(analysis.get("Analysis.DetectionThreshold", 1.0)))
            lo, hi = analysis.get("Analysis.BGRange", [-30, 0])
            self.bg_lo.setValue(int(lo))
            self.bg_hi.setValue(int(hi))
            self.start_at.setValue(int(analysis.get("Analysis.StartAt", 0)))
        finally:
            self._loading = False

    def set_series(self, series_uri: str | None) -> None:
        """Show where the results of ``series_uri`` go (a placeholder when none is chosen)."""
        from rules.uris import results_filename_for
        if not series_uri:
            self.results_preview.setText("<i>{{spool_dir}}/analysis/{{series_stub}}.h5r</i> "
                                         "(pick a series to see the file)")
            return
        try:
            path = results_filename_for(series_uri)
        except ValueError as exc:
            self.results_preview.setText(f"⚠ {exc}")
            return
        self.results_preview.setToolTip(f"{path}\n{RESULTS_TIP}")
        self.results_preview.setText(f"→ {breakable(path)}<br><span style='color:gray'>table FitResults; "
                                     "if that file exists, the next free _1, _2, … name (the "
                                     "next steps read that one)</span>")

    def analysis(self) -> dict:
        return {**self._analysis,
                "Analysis.FitModule": self.fit_module.currentText(),
                "Analysis.DetectionThreshold": round(self.threshold.value(), 6),
                "Analysis.BGRange": [self.bg_lo.value(), self.bg_hi.value()],
                "Analysis.StartAt": self.start_at.value()}

    def _on_changed(self, *_args) -> None:
        if not self._loading:
            self._analysis = self.analysis()
            self.analysisEdited.emit(self._analysis)


class RecipeStepEditor(QWidget):
    """Edits a recipe step: its recipe (picked or inline YAML), input patterns and output folder.

    Signals
    -------
    stepEdited(dict)
        Changed fields of the step (``recipe``, ``recipe_uri``, ``input_patterns``, ``output_dir``).
    clusterRecipeRequested(str)
        The user picked a recipe on the cluster (its URI); the editor shows its text when given.
    """

    stepEdited = pyqtSignal(dict)
    clusterRecipeRequested = pyqtSignal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._loading = False
        self._context: dict = {}
        self.recipe_picker = QComboBox()
        self.recipe_picker.setToolTip("Where the recipe comes from")
        self.recipe_picker.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.recipe_picker.setMinimumContentsLength(10)
        self.recipe_picker.addItem("Inline YAML (typed below)", INLINE)
        for name, path in bundled_recipes().items():
            self.recipe_picker.addItem(f"Bundled: {name}", f"bundled:{path}")
        self.file_button = QPushButton("Open file…")
        self.file_button.setToolTip("Load a recipe from a local YAML file")
        self.uri_edit = QLineEdit()
        self.uri_edit.setPlaceholderText("PYME-CLUSTER:///RECIPES/render_image.yaml (optional)")
        self.uri_edit.setToolTip("A recipe on the cluster; used when no inline YAML is given")
        self.yaml_edit = QPlainTextEdit()
        self.yaml_edit.setFont(QFontDatabase.systemFont(QFontDatabase.FixedFont))
        self.yaml_edit.setLineWrapMode(QPlainTextEdit.NoWrap)
        self.yaml_edit.setPlaceholderText(YAML_PLACEHOLDER)
        self.yaml_edit.setTabChangesFocus(True)
        self.yaml_edit.setMinimumHeight(140)
        self.recipe_problems = problem_label()
        self.inputs_table = QTableWidget(0, 3)
        self.inputs_table.setHorizontalHeaderLabels(["Input", "Pattern", "Resolves to"])
        self.inputs_table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeToContents)
        self.inputs_table.horizontalHeader().setSectionResizeMode(1, QHeaderView.Stretch)
        self.inputs_table.horizontalHeader().setSectionResizeMode(2, QHeaderView.Stretch)
        self.inputs_table.verticalHeader().hide()
        self.inputs_table.setMinimumHeight(70)
        self.inputs_table.setMaximumHeight(130)
        self.add_input_button = QPushButton("Add input")
        self.remove_input_button = QPushButton("Remove input")
        self.inputs_problems = problem_label()
        self.passed_input = QLabel()
        self.passed_input.setStyleSheet("color: gray;")
        self.passed_input.setWordWrap(True)
        self.passed_input.setMinimumWidth(120)
        self.passed_input.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.passed_input.hide()
        self.output_edit = QLineEdit()
        self.output_edit.setPlaceholderText("empty: the series folder, as PYME's launch gives it")
        self.output_edit.setToolTip("Folder the recipe's {output_dir} stands for; {{variables}} "
                                    "allowed. Leave it empty for a preset PYME runs the same way "
                                    "(PYME's launch sets the series folder)")
        self.output_preview = QLabel()
        self.output_preview.setStyleSheet("color: gray;")
        self.output_preview.setWordWrap(True)
        self.output_preview.setMinimumWidth(120)
        self.output_preview.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.output_problems = problem_label()
        self.writes_preview = QLabel()
        self.writes_preview.setWordWrap(True)
        self.writes_preview.setMinimumWidth(120)
        self.writes_preview.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.writes_preview.setToolTip("The files this step's output modules write (an existing "
                                       "file is never overwritten: the next free _1, _2, … name)")
        self.writes_preview.hide()

        picker = QHBoxLayout()
        picker.addWidget(QLabel("Recipe"))
        picker.addWidget(self.recipe_picker, 1)
        picker.addWidget(self.file_button)
        input_buttons = QHBoxLayout()
        input_buttons.addWidget(self.add_input_button)
        input_buttons.addWidget(self.remove_input_button)
        input_buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(picker)
        layout.addWidget(self.uri_edit)
        layout.addWidget(self.yaml_edit, 3)
        layout.addWidget(self.recipe_problems)
        layout.addWidget(QLabel("Inputs (recipe input → pattern)"))
        layout.addWidget(self.inputs_table, 2)
        layout.addLayout(input_buttons)
        layout.addWidget(self.passed_input)
        layout.addWidget(self.inputs_problems)
        out = QHBoxLayout()
        out.addWidget(QLabel("Output folder"))
        out.addWidget(self.output_edit, 1)
        layout.addLayout(out)
        layout.addWidget(self.output_preview)
        layout.addWidget(self.writes_preview)
        layout.addWidget(self.output_problems)

        self.recipe_picker.activated.connect(self._on_recipe_picked)
        self.file_button.clicked.connect(self._on_file_clicked)
        self.uri_edit.editingFinished.connect(self._on_uri_edited)
        self.yaml_edit.textChanged.connect(self._on_yaml_changed)
        self.inputs_table.itemChanged.connect(self._on_inputs_changed)
        self.add_input_button.clicked.connect(self._on_add_input)
        self.remove_input_button.clicked.connect(self._on_remove_input)
        self.output_edit.textChanged.connect(self._on_output_changed)

    # -- public API -----------------------------------------------------------------------------
    def set_step(self, step: ChainStep) -> None:
        self._loading = True
        try:
            self.yaml_edit.setPlaceholderText(YAML_PLACEHOLDER)
            self.yaml_edit.setPlainText(step.recipe)
            self.uri_edit.setText(step.recipe_uri)
            self._show_source(step.recipe, step.recipe_uri)
            self.inputs_table.setRowCount(0)
            for name, pattern in step.input_patterns.items():
                self._append_input_row(name, pattern)
            self.output_edit.setText(step.output_dir)
        finally:
            self._loading = False
        self.refresh_previews()

    def set_cluster_recipes(self, uris: list[str]) -> None:
        """Offer the recipes found in the cluster's ``RECIPES/`` folder."""
        for i in range(self.recipe_picker.count() - 1, -1, -1):
            if str(self.recipe_picker.itemData(i)).startswith("cluster:"):
                self.recipe_picker.removeItem(i)
        for uri in uris:
            self.recipe_picker.addItem("Cluster: " + uri.rsplit("/", 1)[-1], "cluster:" + uri)

    def show_recipe_text(self, uri: str, text: str) -> None:
        """Show a cluster recipe's text (fetched elsewhere) when ``uri`` is still this step's."""
        if self.uri_edit.text() == uri and not self.yaml_edit.toPlainText():
            self.yaml_edit.setPlaceholderText(text)

    def set_context(self, context: dict) -> None:
        self._context = dict(context)
        self.refresh_previews()

    def set_passed_input(self, uri: str | None) -> None:
        """Say what the step reads as ``input`` when no pattern names it: ``uri`` (what the launch
        or the step before passes on; a description when no series is chosen), ``''`` for
        nothing, None to hide the line."""
        if uri is None:
            self.passed_input.hide()
            return
        self.passed_input.setText(
            f"input ← {breakable(uri)} (passed on to this step, as in PYME)" if uri else
            "input ← nothing: the step before passes no file on")
        self.passed_input.setToolTip(uri)
        self.passed_input.show()

    def set_writes(self, paths: list[str] | None) -> None:
        """Show the files the step writes (bare cluster paths); None hides the line."""
        if not paths:
            self.writes_preview.setVisible(paths is not None)
            self.writes_preview.setText("Writes: no files (no output module)")
            return
        self.writes_preview.setText("Writes → " + ", ".join(breakable(p) for p in paths))
        self.writes_preview.show()

    def input_patterns(self) -> dict:
        patterns = {}
        for row in range(self.inputs_table.rowCount()):
            name = self.inputs_table.item(row, 0)
            pattern = self.inputs_table.item(row, 1)
            if name is not None and name.text().strip():
                patterns[name.text().strip()] = pattern.text() if pattern is not None else ""
        return patterns

    def set_input_pattern(self, name: str, pattern: str) -> None:
        """Type ``pattern`` for input ``name`` (adding the row if needed), as a user would."""
        for row in range(self.inputs_table.rowCount()):
            if self.inputs_table.item(row, 0).text() == name:
                self.inputs_table.item(row, 1).setText(pattern)
                return
        self._append_input_row(name, pattern)
        self._on_inputs_changed()

    def show_problems(self, problems: list[StepProblem]) -> None:
        recipe = [p for p in problems if p.field in ("recipe", "analysis")]
        inputs = [p for p in problems if p.field.startswith("input:")]
        show_problem_list(self.recipe_problems, recipe)
        show_problem_list(self.inputs_problems, inputs)
        show_problem_list(self.output_problems, [p for p in problems if p.field == "output_dir"])
        self._mark_lines([p.line for p in recipe if p.line])
        bad_inputs = {p.field[6:]: str(p) for p in inputs}
        self._loading = True
        try:
            for row in range(self.inputs_table.rowCount()):
                name_item = self.inputs_table.item(row, 0)
                pattern_item = self.inputs_table.item(row, 1)
                if name_item is None or pattern_item is None:
                    continue
                message = bad_inputs.get(name_item.text())
                pattern_item.setBackground(QColor(255, 205, 205) if message else QColor(0, 0, 0, 0))
                pattern_item.setToolTip(message or "")
        finally:
            self._loading = False

    def marked_lines(self) -> list[int]:
        """1-based lines highlighted as having a problem."""
        return [sel.cursor.blockNumber() + 1 for sel in self.yaml_edit.extraSelections()]

    def refresh_previews(self) -> None:
        from rules.patterns import PatternError
        self._loading = True
        try:
            for row in range(self.inputs_table.rowCount()):
                pattern = self.inputs_table.item(row, 1)
                text = pattern.text() if pattern is not None else ""
                try:
                    preview = resolve(text, self._context) if self._context else ""
                except PatternError as exc:
                    preview = f"⚠ {exc}"
                item = QTableWidgetItem(preview)
                item.setToolTip(preview)
                item.setFlags(item.flags() & ~Qt.ItemIsEditable)
                item.setForeground(QColor("gray"))
                self.inputs_table.setItem(row, 2, item)
        finally:
            self._loading = False
        try:
            text = self.output_edit.text() or str(self._context.get("output_dir", ""))
            out = resolve(text, self._context) if self._context else ""
            suffix = "" if self.output_edit.text() else " (the series folder)"
            self.output_preview.setText(f"→ {breakable(out)}{suffix}" if out else "")
            self.output_preview.setToolTip(out)
        except PatternError as exc:
            self.output_preview.setText(f"⚠ {exc}")

    # -- internals ------------------------------------------------------------------------------
    def _append_input_row(self, name: str, pattern: str) -> None:
        was_loading, self._loading = self._loading, True
        try:
            row = self.inputs_table.rowCount()
            self.inputs_table.insertRow(row)
            self.inputs_table.setItem(row, 0, QTableWidgetItem(name))
            self.inputs_table.setItem(row, 1, QTableWidgetItem(pattern))
        finally:
            self._loading = was_loading

    def _mark_lines(self, lines: list[int]) -> None:
        selections = []
        document = self.yaml_edit.document()
        for line in sorted(set(lines)):
            block = document.findBlockByNumber(line - 1)
            if not block.isValid():
                block = document.lastBlock()
            selection = QTextEdit.ExtraSelection()
            selection.format.setBackground(QColor(255, 205, 205))
            selection.format.setProperty(QTextFormat.FullWidthSelection, True)
            selection.cursor = QTextCursor(block)
            selections.append(selection)
        self.yaml_edit.setExtraSelections(selections)

    def _emit(self, **changes) -> None:
        if not self._loading:
            self.stepEdited.emit(changes)

    def _on_recipe_picked(self, index: int) -> None:
        data = str(self.recipe_picker.itemData(index))
        if data.startswith("bundled:"):
            path = Path(data[len("bundled:"):])
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                show_problem_list(self.recipe_problems,
                               [StepProblem(0, "recipe", f"cannot read {path.name}: {exc}")])
                return
            self.uri_edit.clear()
            self.yaml_edit.setPlainText(text)   # emits recipe through _on_yaml_changed
            self._emit(recipe_uri="")
        elif data.startswith("cluster:"):
            uri = data[len("cluster:"):]
            self._loading = True
            try:
                self.yaml_edit.clear()
                self.uri_edit.setText(uri)
            finally:
                self._loading = False
            self._emit(recipe="", recipe_uri=uri)
            self.clusterRecipeRequested.emit(uri)

    def _on_file_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open recipe", "", "Recipes (*.yaml *.yml)")
        if path:
            self.load_file(path)

    def load_file(self, path: str) -> None:
        """Put a local recipe file's text in the editor."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            show_problem_list(self.recipe_problems,
                           [StepProblem(0, "recipe", f"cannot read {path}: {exc}")])
            return
        self.uri_edit.clear()
        self.yaml_edit.setPlainText(text)
        self._emit(recipe_uri="")

    def _on_uri_edited(self) -> None:
        uri = self.uri_edit.text().strip()
        self._emit(recipe_uri=uri)
        if uri and not self._loading:
            self.clusterRecipeRequested.emit(uri)

    def _on_yaml_changed(self) -> None:
        text = self.yaml_edit.toPlainText()
        if not self._loading:
            self._show_source(text, "")
        self._emit(recipe=text)

    def _show_source(self, text: str, uri: str) -> None:
        """Point the picker at where the step's recipe comes from: a cluster recipe, a bundled one
        (its text unchanged), else inline YAML."""
        wanted = INLINE
        if uri and not text:
            wanted = "cluster:" + uri
        elif text:
            name = bundled_name(text)
            path = bundled_recipes().get(name) if name else None
            wanted = f"bundled:{path}" if path else INLINE
        index = self.recipe_picker.findData(wanted)
        self.recipe_picker.setCurrentIndex(index if index >= 0 else 0)

    def _on_inputs_changed(self, *_args) -> None:
        if self._loading:
            return
        self.refresh_previews()
        self._emit(input_patterns=self.input_patterns())

    def _on_add_input(self) -> None:
        existing = set(self.input_patterns())
        name = next(n for n in (f"input{i or ''}" for i in range(1000)) if n not in existing)
        self._append_input_row(name, "")
        self._on_inputs_changed()

    def _on_remove_input(self) -> None:
        row = self.inputs_table.currentRow()
        if row >= 0:
            self.inputs_table.removeRow(row)
            self._on_inputs_changed()

    def _on_output_changed(self, text: str) -> None:
        self.refresh_previews()
        self._emit(output_dir=text)
