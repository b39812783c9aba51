"""The chain editor: the list of steps and an editor for the selected one.

Steps are edited through :class:`~widgets.chain_model.ChainModel`; problems are found by
:func:`~rules.chain.chain_problems` after a short pause in typing (a single-shot timer)
and shown next to the field they concern: the YAML line that does not parse, an unknown
``{{variable}}`` in an input pattern, an input no earlier step produces.
"""
from __future__ import annotations

import logging

from PyQt5.QtCore import Qt, QTimer, pyqtSignal
from PyQt5.QtWidgets import (
    QAbstractItemView,
    QFrame,
    QHBoxLayout,
    QLabel,
    QListView,
    QPushButton,
    QScrollArea,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from rules.chain import (
    LOCALISATION,
    ChainStep,
    StepProblem,
    chain_problems,
    main_input,
    preview_context,
    step_outputs,
)
from rules.recipe_check import BUNDLED_NOTE
from widgets.background import BackgroundCall, CallSignals, TaskPool
from widgets.chain_model import ChainModel
from widgets.step_editors import LocalisationStepEditor, RecipeStepEditor, bundled_recipes, show_problem_list

logger = logging.getLogger(__name__)

VALIDATION_DELAY_MS = 300
__all__ = ["ChainEditor", "bundled_recipes"]


class ChainEditor(QWidget):
    """The list of steps (drag to reorder) and an editor for the selected step.

    Signals
    -------
    problemsChanged(list)
        All current problems (``StepProblem``), after the debounced check.
    currentStepChanged(int)
        The selected row (-1 for none).
    """

    problemsChanged = pyqtSignal(list)
    currentStepChanged = pyqtSignal(int)

    def __init__(self, model: ChainModel, parent=None):
        super().__init__(parent)
        self.model = model
        self._series_uri: str | None = None
        self._available_modules = None
        self._bundled_modules = False
        self._problems: list[StepProblem] = []
        self._warnings: list[StepProblem] = []
        self._fetch_recipe = None
        self._recipe_texts: dict[str, str] = {}
        self._pool = TaskPool(2, name='chain_editor')
        self._signals = CallSignals(self)
        self._signals.done.connect(self._on_call_done)
        self._signals.failed.connect(self._on_call_failed)

        self.list_view = QListView()
        self.list_view.setModel(model)
        self.list_view.setSelectionMode(QAbstractItemView.SingleSelection)
        self.list_view.setDragDropMode(QAbstractItemView.InternalMove)
        self.list_view.setDefaultDropAction(Qt.MoveAction)
        self.list_view.setDragEnabled(True)
        self.list_view.setAcceptDrops(True)
        self.list_view.setDropIndicatorShown(True)
        self.list_view.setToolTip("Steps run top to bottom; drag to reorder")
        self.add_localisation_button = QPushButton("+ Localise")
        self.add_localisation_button.setToolTip("Add a localisation step (fit every frame)")
        self.add_recipe_button = QPushButton("+ Recipe")
        self.add_recipe_button.setToolTip("Add a recipe step (runs when the previous step ends)")
        self.duplicate_button = QPushButton("Duplicate")
        self.remove_button = QPushButton("Remove")
        for button in (self.duplicate_button, self.remove_button):
            button.setEnabled(False)

        self.localisation_editor = LocalisationStepEditor()
        self.recipe_editor = RecipeStepEditor()
        self.empty_label = QLabel("Add a step, or load a preset from the Presets menu.")
        self.empty_label.setAlignment(Qt.AlignCenter)
        self.empty_label.setWordWrap(True)
        self.stack = _PageSwitch()
        for page in (self.empty_label, self.localisation_editor, self.recipe_editor):
            self.stack.addWidget(page)
        self.summary_label = QLabel()
        self.summary_label.setWordWrap(True)
        self.modules_note = QLabel()
        self.modules_note.setWordWrap(True)
        self.modules_note.setStyleSheet("color: #8a6d00;")
        self.modules_note.setToolTip("This cluster does not publish its recipe modules (a PYME "
                                     "cluster): modules Spoolside knows are checked against its "
                                     "own list, the others are not checked")
        self.modules_note.hide()

        buttons = QHBoxLayout()
        for button in (self.add_localisation_button, self.add_recipe_button,
                       self.duplicate_button, self.remove_button):
            buttons.addWidget(button)
        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addWidget(self.list_view)
        top_layout.addLayout(buttons)
        top_layout.addWidget(self.summary_label)
        top_layout.addWidget(self.modules_note)
        splitter = QSplitter(Qt.Vertical)
        splitter.addWidget(top)
        # a short window scrolls the step's editor instead of squeezing its fields over each other
        self.editor_scroll = QScrollArea()
        self.editor_scroll.setWidgetResizable(True)
        self.editor_scroll.setFrameShape(QFrame.NoFrame)
        self.editor_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.editor_scroll.setWidget(self.stack)
        splitter.addWidget(self.editor_scroll)
        splitter.setStretchFactor(0, 1)
        splitter.setStretchFactor(1, 3)
        splitter.setSizes([200, 500])
        splitter.setChildrenCollapsible(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(splitter)

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(VALIDATION_DELAY_MS)
        self._timer.timeout.connect(self.validate_now)

        self.add_localisation_button.clicked.connect(self._on_add_localisation)
        self.add_recipe_button.clicked.connect(self._on_add_recipe)
        self.duplicate_button.clicked.connect(self._on_duplicate)
        self.remove_button.clicked.connect(self._on_remove)
        self.list_view.selectionModel().currentRowChanged.connect(self._on_current_changed)
        model.chainChanged.connect(self._timer.start)
        model.modelReset.connect(self._on_model_reset)
        model.rowsMoved.connect(self._on_rows_moved)
        self.localisation_editor.analysisEdited.connect(self._on_analysis_edited)
        self.recipe_editor.stepEdited.connect(self._on_recipe_edited)
        self.recipe_editor.clusterRecipeRequested.connect(self._on_cluster_recipe_requested)
        self._update_context()
        self._timer.start()

    # -- public API -----------------------------------------------------------------------------
    def current_row(self) -> int:
        index = self.list_view.currentIndex()
        return index.row() if index.isValid() else -1

    def select_row(self, row: int) -> None:
        self.list_view.setCurrentIndex(self.model.index(row))

    def set_series(self, series_uri: str | None) -> None:
        """The series the previews resolve patterns for."""
        self._series_uri = series_uri
        self._update_context()
        self._timer.start()

    def set_available_modules(self, modules, bundled: bool = False) -> None:
        """Recipe modules the cluster can run: their names, or names → parameter declarations
        (``rules.recipe_params.Param``), or ``None`` when unknown (then not checked). ``bundled``:
        the declarations are Spoolside's bundled list, not the cluster's (what they find is shown
        as warnings that do not block a launch, with a note saying so)."""
        self._available_modules = modules
        self._bundled_modules = bundled and modules is not None
        self._timer.start()

    def set_recipe_source(self, list_recipes, fetch_recipe) -> None:
        """Functions run off the GUI thread: ``list_recipes()`` → URIs, ``fetch_recipe(uri)`` → text."""
        self._fetch_recipe = fetch_recipe
        self._pool.start(BackgroundCall("list", list_recipes, self._signals))

    def stop(self, timeout_ms: int = 10000) -> bool:
        """Wait for cluster recipe listings and fetches in progress."""
        self._fetch_recipe = None
        return self._pool.waitForDone(timeout_ms)

    def problems(self) -> list[StepProblem]:
        """The problems found by the last check (call :meth:`validate_now` to force one); they
        block a launch."""
        return list(self._problems)

    def warnings(self) -> list[StepProblem]:
        """What the last check found against the bundled module list (shown, not blocking)."""
        return list(self._warnings)

    def validate_now(self) -> list[StepProblem]:
        self._timer.stop()
        from rules.patterns import PatternError
        try:
            context = preview_context(self._series_uri)
        except PatternError as exc:
            context = {}
            logger.info("no preview context for %s: %s", self._series_uri, exc)
        found = chain_problems(self.model.steps, context, self._available_modules,
                               self._recipe_texts, bundled_modules=self._bundled_modules)
        self._problems = [p for p in found if not p.warning]
        self._warnings = [p for p in found if p.warning]
        self.model.set_problems(found)
        self._show_current_problems()
        self._show_passed_input()
        if self._problems:
            rows = sorted({p.row + 1 for p in self._problems})
            self.summary_label.setText(f"⚠ {len(self._problems)} problem(s) in step "
                                       + ", ".join(map(str, rows)))
            self.summary_label.setStyleSheet("color: #b00020;")
        else:
            n = self.model.rowCount()
            self.summary_label.setText(f"{n} step{'s' if n != 1 else ''}, no problems found"
                                       if n else "")
            self.summary_label.setStyleSheet("")
        if self._bundled_modules:
            warned = (f"; {len(self._warnings)} warning(s) in step "
                      + ", ".join(str(r) for r in sorted({p.row + 1 for p in self._warnings}))
                      if self._warnings else "")
            self.modules_note.setText(f"ⓘ {BUNDLED_NOTE[0].upper()}{BUNDLED_NOTE[1:]}{warned}")
        self.modules_note.setVisible(self._bundled_modules)
        self.problemsChanged.emit(self.problems())
        return self.problems()

    def add_localisation_step(self) -> int:
        return self._add(ChainStep.localisation())

    def add_recipe_step(self, recipe: str = "") -> int:
        return self._add(ChainStep.recipe_step(recipe=recipe))

    # -- internals ------------------------------------------------------------------------------
    def _add(self, step: ChainStep) -> int:
        row = self.current_row()
        row = self.model.insert_step(row + 1 if row >= 0 else self.model.rowCount(), step)
        self.select_row(row)
        return row

    def _update_context(self) -> None:
        from rules.patterns import PatternError
        try:
            context = preview_context(self._series_uri)
        except PatternError:
            context = {}
        self.recipe_editor.set_context(context if self._series_uri else {})
        self.localisation_editor.set_series(self._series_uri)

    def _show_current_problems(self) -> None:
        row = self.current_row()
        mine = [p for p in self._problems + self._warnings if p.row == row]
        if row >= 0 and self.model.step(row).kind == LOCALISATION:
            show_problem_list(self.localisation_editor.problems_label, mine)
        else:
            self.recipe_editor.show_problems(mine)

    def _show_passed_input(self) -> None:
        """Tell the recipe editor what its step reads when no pattern names its ``input``, and
        the files it writes."""
        from rules.patterns import PatternError
        row = self.current_row()
        if row < 0 or self.model.step(row).kind == LOCALISATION:
            return
        steps = self.model.steps
        try:
            context = preview_context(self._series_uri) if self._series_uri else None
        except PatternError:
            context = None
        self.recipe_editor.set_writes(
            step_outputs(steps, row, context, self._recipe_texts) if context else None)
        if "input" in steps[row].input_patterns:
            self.recipe_editor.set_passed_input(None)
        elif not self._series_uri:
            before = steps[row - 1].kind if row > 0 else None
            self.recipe_editor.set_passed_input(
                "the series" if before is None else
                "the localisation's results file (.h5r)" if before == LOCALISATION else "")
        else:
            try:
                self.recipe_editor.set_passed_input(
                    main_input(steps, row, preview_context(self._series_uri)))
            except PatternError:
                self.recipe_editor.set_passed_input("")

    def _load_current(self) -> None:
        row = self.current_row()
        self.duplicate_button.setEnabled(row >= 0)
        self.remove_button.setEnabled(row >= 0)
        if row < 0:
            self.stack.setCurrentWidget(self.empty_label)
        else:
            step = self.model.step(row)
            if step.kind == LOCALISATION:
                self.localisation_editor.set_analysis(step.analysis)
                self.stack.setCurrentWidget(self.localisation_editor)
            else:
                self.recipe_editor.set_step(step)
                self._show_passed_input()
                self.stack.setCurrentWidget(self.recipe_editor)
                if step.recipe_uri and not step.recipe:
                    if step.recipe_uri in self._recipe_texts:
                        self.recipe_editor.show_recipe_text(step.recipe_uri,
                                                            self._recipe_texts[step.recipe_uri])
                    else:
                        self._on_cluster_recipe_requested(step.recipe_uri)
            self._show_current_problems()
        self.currentStepChanged.emit(row)

    def _on_current_changed(self, *_args) -> None:
        self._load_current()

    def _on_model_reset(self) -> None:
        if self.model.rowCount():
            self.select_row(0)
        self._load_current()

    def _on_rows_moved(self, *_args) -> None:
        self._load_current()

    def _on_add_localisation(self) -> None:
        self.add_localisation_step()

    def _on_add_recipe(self) -> None:
        self.add_recipe_step()

    def _on_duplicate(self) -> None:
        row = self.current_row()
        if row >= 0:
            self.select_row(self.model.duplicate_step(row))

    def _on_remove(self) -> None:
        row = self.current_row()
        if row >= 0:
            self.model.remove_step(row)
            if self.model.rowCount():
                self.select_row(min(row, self.model.rowCount() - 1))
            self._load_current()

    def _on_analysis_edited(self, analysis: dict) -> None:
        row = self.current_row()
        if row >= 0:
            self.model.update_step(row, analysis=analysis)

    def _on_recipe_edited(self, changes: dict) -> None:
        row = self.current_row()
        if row >= 0:
            self.model.update_step(row, **changes)

    def recipe_text(self, uri: str) -> str | None:
        """The fetched text of a cluster recipe, if it has arrived."""
        return self._recipe_texts.get(uri)

    def _on_cluster_recipe_requested(self, uri: str) -> None:
        if self._fetch_recipe is not None and uri not in self._recipe_texts:
            fetch = self._fetch_recipe
            self._pool.start(
                BackgroundCall("fetch:" + uri, lambda: fetch(uri), self._signals))

    def _on_call_done(self, what: str, result) -> None:
        if what == "list":
            self.recipe_editor.set_cluster_recipes(list(result))
        elif what.startswith("fetch:"):
            uri = what[len("fetch:"):]
            self._recipe_texts[uri] = str(result)
            self.recipe_editor.show_recipe_text(uri, str(result))
            self._timer.start()

    def _on_call_failed(self, what: str, message: str) -> None:
        if what == "list":
            self.recipe_editor.recipe_picker.setToolTip(f"Cluster recipes unavailable: {message}")


class _PageSwitch(QWidget):
    """Shows one of its pages; sized by that page alone, height for width included (a
    QStackedWidget asks for room for its largest page, so a short step would scroll too)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._current: QWidget | None = None

    def addWidget(self, page: QWidget) -> None:  # noqa: N802 - QStackedWidget's name
        self._layout.addWidget(page)
        page.setVisible(self._current is None)
        if self._current is None:
            self._current = page

    def setCurrentWidget(self, page: QWidget) -> None:  # noqa: N802 - QStackedWidget's name
        if page is not self._current:
            if self._current is not None:
                self._current.hide()
            self._current = page
            page.show()

    def currentWidget(self) -> QWidget | None:  # noqa: N802 - QStackedWidget's name
        return self._current
