"""The analysis chain: plain steps, their conversion to rule factories, and a Qt list model.

:class:`ChainStep` is plain data (no Qt). :class:`ChainModel` is a ``QAbstractListModel`` over a
list of steps: every insert, remove and move goes through Qt's begin/end calls, so views, drag and
drop and validation hook in at one place.
"""
from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass, field

from PyQt5.QtCore import QAbstractListModel, QMimeData, QModelIndex, Qt, pyqtSignal
from PyQt5.QtGui import QBrush, QColor

logger = logging.getLogger(__name__)

LOCALISATION = "localisation"
RECIPE = "recipe"
MIME_TYPE = "application/x-spoolside-chain-rows"

#: Analysis settings a new localisation step starts with (PYME's GUI defaults, §5.3).
DEFAULT_ANALYSIS = {
    "Analysis.FitModule": "LatGaussFitFR",
    "Analysis.DetectionThreshold": 1.0,
    "Analysis.BGRange": [-30, 0],
    "Analysis.StartAt": 10,
}
DEFAULT_INPUT_PATTERNS = {"input": "{{spool_dir}}/analysis/{{series_stub}}.h5r"}
DEFAULT_OUTPUT_DIR = "{{spool_dir}}/analysis"


@dataclass
class ChainStep:
    """One step of a chain: a localisation of every frame, or a recipe run over earlier outputs.

    ``recipe`` is inline YAML text; ``recipe_uri`` a cluster URI (used when ``recipe`` is empty).
    ``input_patterns`` maps recipe input names to ``{{variable}}`` patterns; ``output_dir`` is a
    pattern too. ``analysis`` holds a localisation step's ``Analysis.*`` settings. ``extra`` keeps
    factory keyword arguments this editor does not show, so loading and saving loses nothing.
    """

    kind: str = RECIPE
    recipe: str = ""
    recipe_uri: str = ""
    input_patterns: dict = field(default_factory=dict)
    output_dir: str = ""
    analysis: dict = field(default_factory=dict)
    factory_class: str = ""
    extra: dict = field(default_factory=dict)

    @classmethod
    def localisation(cls, analysis: dict | None = None) -> "ChainStep":
        return cls(kind=LOCALISATION, analysis=dict(analysis or DEFAULT_ANALYSIS),
                   factory_class="LocalisationRuleFactory")

    @classmethod
    def recipe_step(cls, recipe: str = "", recipe_uri: str = "",
                    input_patterns: dict | None = None,
                    output_dir: str = DEFAULT_OUTPUT_DIR) -> "ChainStep":
        patterns = dict(DEFAULT_INPUT_PATTERNS if input_patterns is None else input_patterns)
        return cls(kind=RECIPE, recipe=recipe, recipe_uri=recipe_uri, input_patterns=patterns,
                   output_dir=output_dir, factory_class="RecipeRuleFactory")

    def copy(self) -> "ChainStep":
        return copy.deepcopy(self)

    def title(self) -> str:
        """A short label for lists: the kind and the recipe's name or the fit module."""
        if self.kind == LOCALISATION:
            return f"Localise ({self.analysis.get('Analysis.FitModule', '?')})"
        if self.recipe_uri and not self.recipe:
            return "Recipe: " + self.recipe_uri.rstrip("/").rsplit("/", 1)[-1]
        name = _recipe_label(self.recipe)
        return f"Recipe: {name}" if name else "Recipe (empty)"

    # -- conversion to and from the engine's factories ------------------------------------------
    def to_factory(self):
        """This step as a ``rules.factories`` factory (not yet chained)."""
        from rules import factories as rf
        kwargs = copy.deepcopy(self.extra)
        if self.kind == LOCALISATION:
            cls = (rf.SpoolLocalLocalizationRuleFactory
                   if self.factory_class == "SpoolLocalLocalizationRuleFactory"
                   else rf.LocalisationRuleFactory)
            kwargs["analysisMetadata"] = _to_metadata(self.analysis)
            return cls(**kwargs)
        if self.recipe:
            kwargs["recipe"] = self.recipe
        elif self.recipe_uri:
            kwargs["recipeURI"] = self.recipe_uri
        if self.input_patterns:
            kwargs["input_patterns"] = dict(self.input_patterns)
        if self.output_dir:
            kwargs["output_dir"] = self.output_dir
        return rf.RecipeRuleFactory(**kwargs)

    @classmethod
    def from_factory(cls, factory) -> "ChainStep":
        """The step a factory describes (its ``on_completion`` is ignored)."""
        name = type(factory).__name__
        kwargs = dict(getattr(factory, "kwargs", {}) or {})
        kwargs.pop("on_completion", None)
        if name in ("LocalisationRuleFactory", "SpoolLocalLocalizationRuleFactory"):
            analysis = _from_metadata(kwargs.pop("analysisMetadata", {}))
            return cls(kind=LOCALISATION, analysis=analysis, factory_class=name,
                       extra=copy.deepcopy(kwargs))
        patterns = kwargs.pop("input_patterns", None) or kwargs.pop("input_templates", None) or {}
        return cls(kind=RECIPE, recipe=kwargs.pop("recipe", "") or "",
                   recipe_uri=kwargs.pop("recipeURI", "") or "",
                   input_patterns=dict(patterns), output_dir=kwargs.pop("output_dir", "") or "",
                   factory_class=name, extra=copy.deepcopy(kwargs))


def to_factories(steps: list[ChainStep], *, chained: bool = True) -> list:
    """Factories for ``steps`` in order; with ``chained`` each one's ``on_completion`` is the next."""
    factories = [step.to_factory() for step in steps]
    if chained:
        for first, second in zip(factories, factories[1:]):
            first.chain(second)
    return factories


def from_factories(factories) -> list[ChainStep]:
    """Steps for a list of factories, or for one factory and its ``on_completion`` chain."""
    if not isinstance(factories, (list, tuple)):
        flat, factory = [], factories
        while factory is not None:
            flat.append(factory)
            factory = getattr(factory, "on_completion", None)
        factories = flat
    return [ChainStep.from_factory(f) for f in factories]


def _to_metadata(analysis: dict):
    from rules.metadata import MetaDataHandler
    return MetaDataHandler(copy.deepcopy(analysis))


def _from_metadata(md) -> dict:
    if md is None:
        return {}
    if isinstance(md, dict):
        return copy.deepcopy(md)
    if hasattr(md, "to_dict"):
        return dict(md.to_dict())
    return {key: md[key] for key in md.keys()}


def _recipe_label(text: str) -> str:
    """The bundled recipe's name when ``text`` is one, else its first and last module names."""
    import yaml
    stripped = _strip_comments(text)
    for name, body in _bundled_texts().items():
        if body == stripped:
            return name.replace("_", " ")
    try:
        modules = yaml.safe_load(text)
    except yaml.YAMLError:
        return "(YAML with errors)"
    names = [str(next(iter(m))).rsplit(".", 1)[-1] for m in modules
             if isinstance(m, dict) and m] if isinstance(modules, list) else []
    if not names:
        return ""
    return names[0] if len(names) == 1 else f"{names[0]} … {names[-1]}"


def _strip_comments(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip().splitlines()
                     if line.strip() and not line.lstrip().startswith("#"))


_BUNDLED: dict[str, str] | None = None


def _bundled_texts() -> dict[str, str]:
    global _BUNDLED
    if _BUNDLED is None:
        from resources import resource_path
        folder = resource_path("recipes")
        _BUNDLED = {p.stem: _strip_comments(p.read_text(encoding="utf-8"))
                    for p in sorted(folder.glob("*.yaml"))} if folder.is_dir() else {}
    return _BUNDLED


class ChainModel(QAbstractListModel):
    """A Qt list model over the chain's steps (one row per step), reorderable by drag and drop.

    Signals
    -------
    chainChanged()
        Any step was added, removed, moved or edited.
    """

    chainChanged = pyqtSignal()
    StepRole = Qt.UserRole + 1

    def __init__(self, steps: list[ChainStep] | None = None, parent=None):
        super().__init__(parent)
        self._steps: list[ChainStep] = list(steps or [])
        self._problems: dict[int, list[str]] = {}
        self._marking = False
        for sig in (self.rowsInserted, self.rowsRemoved, self.rowsMoved, self.dataChanged,
                    self.modelReset):
            sig.connect(self._emit_changed)

    def _emit_changed(self, *_args) -> None:
        if not self._marking:
            self.chainChanged.emit()

    def set_problems(self, problems) -> None:
        """Show ``StepProblem``s on their rows (red text, tooltip); not a change of the chain."""
        by_row: dict[int, list[str]] = {}
        for problem in problems:
            by_row.setdefault(problem.row, []).append(str(problem))
        if by_row == self._problems:
            return
        self._problems = by_row
        if self._steps:
            self._marking = True
            try:
                self.dataChanged.emit(self.index(0), self.index(len(self._steps) - 1),
                                      [Qt.DisplayRole, Qt.ForegroundRole, Qt.ToolTipRole])
            finally:
                self._marking = False

    # -- plain access ---------------------------------------------------------------------------
    @property
    def steps(self) -> list[ChainStep]:
        """A copy of the steps (edit through the model's methods)."""
        return [s.copy() for s in self._steps]

    def step(self, row: int) -> ChainStep:
        return self._steps[row]

    def to_factories(self, *, chained: bool = True) -> list:
        return to_factories(self._steps, chained=chained)

    def set_factories(self, factories) -> None:
        self.set_steps(from_factories(factories))

    def set_steps(self, steps: list[ChainStep]) -> None:
        self.beginResetModel()
        self._steps = [s.copy() for s in steps]
        self.endResetModel()

    def append_step(self, step: ChainStep) -> int:
        return self.insert_step(len(self._steps), step)

    def insert_step(self, row: int, step: ChainStep) -> int:
        row = max(0, min(row, len(self._steps)))
        self.beginInsertRows(QModelIndex(), row, row)
        self._steps.insert(row, step)
        self.endInsertRows()
        return row

    def remove_step(self, row: int) -> None:
        self.removeRows(row, 1)

    def duplicate_step(self, row: int) -> int:
        return self.insert_step(row + 1, self._steps[row].copy())

    def move_step(self, source: int, destination: int) -> bool:
        """Move the step at ``source`` so that it ends up at index ``destination``."""
        if destination > source:
            destination += 1  # Qt counts the destination before the move
        return self.moveRows(QModelIndex(), source, 1, QModelIndex(), destination)

    def update_step(self, row: int, **changes) -> None:
        """Change fields of one step (e.g. ``recipe=...``) and tell the views."""
        step = self._steps[row]
        for key, value in changes.items():
            if not hasattr(step, key):
                raise AttributeError(f"ChainStep has no field {key!r}")
            setattr(step, key, copy.deepcopy(value))
        index = self.index(row)
        self.dataChanged.emit(index, index, [Qt.DisplayRole, self.StepRole])

    # -- Qt model API ---------------------------------------------------------------------------
    def rowCount(self, parent=QModelIndex()):
        return 0 if parent.isValid() else len(self._steps)

    def data(self, index, role=Qt.DisplayRole):
        if not index.isValid() or not 0 <= index.row() < len(self._steps):
            return None
        step = self._steps[index.row()]
        problems = self._problems.get(index.row(), [])
        if role == Qt.DisplayRole:
            return f"{index.row() + 1}. {step.title()}" + ("  ⚠" if problems else "")
        if role == Qt.ForegroundRole and problems:
            return QBrush(QColor(176, 0, 32))
        if role == Qt.ToolTipRole:
            return "\n".join(problems) if problems else (step.recipe_uri or step.kind)
        if role == self.StepRole:
            return step
        return None

    def flags(self, index):
        base = super().flags(index)
        if index.isValid():
            return base | Qt.ItemIsDragEnabled
        return base | Qt.ItemIsDropEnabled

    def removeRows(self, row, count, parent=QModelIndex()):
        if parent.isValid() or row < 0 or count < 1 or row + count > len(self._steps):
            return False
        self.beginRemoveRows(QModelIndex(), row, row + count - 1)
        del self._steps[row:row + count]
        self.endRemoveRows()
        return True

    def moveRows(self, source_parent, source_row, count, destination_parent, destination_child):
        if (source_parent.isValid() or destination_parent.isValid() or count < 1
                or source_row < 0 or source_row + count > len(self._steps)
                or not 0 <= destination_child <= len(self._steps)
                or source_row <= destination_child <= source_row + count):
            return False
        if not self.beginMoveRows(QModelIndex(), source_row, source_row + count - 1,
                                  QModelIndex(), destination_child):
            return False
        moving = self._steps[source_row:source_row + count]
        del self._steps[source_row:source_row + count]
        insert_at = destination_child - count if destination_child > source_row else destination_child
        self._steps[insert_at:insert_at] = moving
        self.endMoveRows()
        return True

    def supportedDropActions(self):
        return Qt.MoveAction

    def supportedDragActions(self):
        return Qt.MoveAction

    def mimeTypes(self):
        return [MIME_TYPE]

    def mimeData(self, indexes):
        rows = sorted({i.row() for i in indexes if i.isValid()})
        mime = QMimeData()
        mime.setData(MIME_TYPE, json.dumps(rows).encode())
        return mime

    def canDropMimeData(self, data, action, row, column, parent):
        return action == Qt.MoveAction and data.hasFormat(MIME_TYPE)

    def dropMimeData(self, data, action, row, column, parent):
        """Move the dragged rows to the drop position (the view does not remove them afterwards)."""
        if not self.canDropMimeData(data, action, row, column, parent):
            return False
        try:
            rows = json.loads(bytes(data.data(MIME_TYPE)).decode())
        except ValueError:
            return False
        if row < 0:
            row = parent.row() if parent.isValid() else len(self._steps)
        rows = sorted({r for r in rows if 0 <= r < len(self._steps)})
        moving = [self._steps[r] for r in rows]
        # Anchor: the first step at or after the drop row that is not itself being moved;
        # each dragged step goes just before it, in the dragged order.
        anchor = next((s for s in self._steps[row:] if not any(s is m for m in moving)), None)
        for step in moving:
            current = next(i for i, s in enumerate(self._steps) if s is step)
            destination = (len(self._steps) if anchor is None
                           else next(i for i, s in enumerate(self._steps) if s is anchor))
            if current != destination - 1:
                self.moveRows(QModelIndex(), current, 1, QModelIndex(), destination)
        # False: the view must not remove the source rows itself (they were moved here).
        return False


# -- checks before launch (plain, no Qt) -----------------------------------------------------------
LOCALISATION_OUTPUT = "{{spool_dir}}/analysis/{{series_stub}}.h5r"
PLACEHOLDER_SERIES = "PYME-CLUSTER:///example/series_01.pcs"
_OUTPUT_EXTENSIONS = {"ImageOutput": ".tif", "CSVOutput": ".csv", "HDFOutput": ".hdf",
                      "H5ROutput": ".h5r"}


@dataclass(frozen=True)
class StepProblem:
    """Something that would make a step fail; ``field`` says where to show it."""

    row: int
    field: str      # "recipe", "input:<name>", "output_dir", "analysis"
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        if self.field.startswith("input:"):
            where = f"input {self.field[6:]!r}: "
        elif self.field == "output_dir":
            where = "output folder: "
        return where + self.message


def launch_context(series_uri: str) -> dict:
    """The context a chain is launched with for ``series_uri`` (also what previews resolve with)."""
    from rules.patterns import pattern_context
    return pattern_context(series_uri, extra={"seriesName": series_uri})


def preview_context(series_uri: str | None) -> dict:
    """:func:`launch_context` for ``series_uri``, or for a placeholder series when none is chosen."""
    return launch_context(series_uri or PLACEHOLDER_SERIES)


def resolve(pattern: str, context: dict) -> str:
    """``pattern`` with its ``{{variables}}`` filled in (raises ``rules.patterns.PatternError``)."""
    from rules.patterns import substitute
    return substitute(pattern, context)


def cluster_path(uri: str) -> str:
    """``PYME-CLUSTER://filter/a/b?x=1`` and ``/a/b`` both become ``a/b`` (for comparisons)."""
    text = uri.split("?", 1)[0]
    lowered = text.lower()
    if lowered.startswith("pyme-cluster://"):
        text = text[len("pyme-cluster://"):]
        text = text.split("/", 1)[1] if "/" in text else ""
    return text.strip("/")


def recipe_file_outputs(text: str) -> list[str]:
    """``str.format`` file patterns the ``output.*`` modules of a recipe write."""
    import yaml
    try:
        modules = yaml.safe_load(text)
    except yaml.YAMLError:
        return []
    outputs = []
    for item in modules if isinstance(modules, list) else []:
        if not isinstance(item, dict) or len(item) != 1:
            continue
        (name, params), = item.items()
        short = str(name).rsplit(".", 1)[-1]
        if short in _OUTPUT_EXTENSIONS:
            params = params if isinstance(params, dict) else {}
            outputs.append(str(params.get("filePattern",
                                          "{output_dir}/{file_stub}" + _OUTPUT_EXTENSIONS[short])))
    return outputs


def chain_problems(steps: list[ChainStep], context: dict, available_modules=None,
                   recipe_texts: dict | None = None) -> list[StepProblem]:
    """Every problem of every step, found without the network.

    YAML that does not parse (with its line), a module the cluster cannot run, an unknown
    ``{{variable}}`` in a pattern, and an input that no earlier step produces. ``recipe_texts``
    holds the text of recipes given by URI, when it has been fetched.
    """
    recipe_texts = recipe_texts or {}
    from rules.patterns import PatternError
    from rules.recipe_check import check_recipe

    problems: list[StepProblem] = []
    produced: set[str] = set()
    series_path = cluster_path(str(context.get("series_name", context.get("seriesName", ""))))
    for row, step in enumerate(steps):
        if step.kind == LOCALISATION:
            problems += _analysis_problems(row, step.analysis)
            try:
                produced.add(cluster_path(resolve(LOCALISATION_OUTPUT, context)))
            except PatternError:
                pass
            continue
        if not step.recipe and not step.recipe_uri:
            problems.append(StepProblem(row, "recipe", "no recipe: pick one or type its YAML"))
        text = step.recipe or recipe_texts.get(step.recipe_uri, "")
        if text:
            for p in check_recipe(text, available_modules):
                problems.append(StepProblem(row, "recipe", p.message, p.line))
        resolved_inputs = []
        for name, pattern in step.input_patterns.items():
            field_name = f"input:{name}"
            try:
                path = cluster_path(resolve(pattern, context))
            except PatternError as exc:
                problems.append(StepProblem(row, field_name, _unknown_message(exc)))
                continue
            resolved_inputs.append(path)
            if row > 0 and not any(c in path for c in "*?[") and path not in produced \
                    and path != series_path:
                problems.append(StepProblem(
                    row, field_name, f"no earlier step produces {path or '(empty)'}"))
        output_dir = ""
        try:
            output_dir = cluster_path(resolve(step.output_dir, context))
        except PatternError as exc:
            problems.append(StepProblem(row, "output_dir", _unknown_message(exc)))
        stub = resolved_inputs[0].rsplit("/", 1)[-1].rsplit(".", 1)[0] if resolved_inputs else ""
        for pattern in recipe_file_outputs(text):
            try:
                produced.add(cluster_path(pattern.format(output_dir=output_dir, file_stub=stub)))
            except (KeyError, IndexError, ValueError):
                continue
    return problems


def expected_outputs(steps: list[ChainStep], series_uri: str, serverfilter: str = "",
                     recipe_texts: dict | None = None) -> list[tuple[str, str]]:
    """``(label, URI)`` of the files a chain will write for ``series_uri`` (no network needed)."""
    from rules.patterns import PatternError
    from rules.uris import make_cluster_uri, results_filename_for
    context = launch_context(series_uri)
    outputs: list[tuple[str, str]] = []
    for step in steps:
        if step.kind == LOCALISATION:
            outputs.append(("Localisations", make_cluster_uri(results_filename_for(series_uri),
                                                              serverfilter) + "?table=FitResults"))
            continue
        try:
            output_dir = resolve(step.output_dir, context)
            first = resolve(next(iter(step.input_patterns.values()), ""), context)
        except PatternError:
            continue
        stub = first.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
        text = step.recipe or (recipe_texts or {}).get(step.recipe_uri, "")
        for pattern in recipe_file_outputs(text):
            try:
                path = pattern.format(output_dir=output_dir, file_stub=stub)
            except (KeyError, IndexError, ValueError):
                continue
            outputs.append((path.rsplit("/", 1)[-1], make_cluster_uri(path, serverfilter)))
    return outputs


def _unknown_message(exc) -> str:
    known = ", ".join("{{%s}}" % k for k in exc.known if k != "seriesName")
    return "unknown variable {{%s}}; known: %s" % (exc.name, known)


def _analysis_problems(row: int, analysis: dict) -> list[StepProblem]:
    problems = []
    if not analysis.get("Analysis.FitModule"):
        problems.append(StepProblem(row, "analysis", "Analysis.FitModule is required"))
    threshold = analysis.get("Analysis.DetectionThreshold")
    if not isinstance(threshold, (int, float)) or threshold <= 0:
        problems.append(StepProblem(row, "analysis", "detection threshold must be above 0"))
    bg = analysis.get("Analysis.BGRange", [-30, 0])
    if not (isinstance(bg, (list, tuple)) and len(bg) == 2 and bg[0] < bg[1]):
        problems.append(StepProblem(row, "analysis", "background range must be [lo, hi] with lo < hi"))
    return problems
