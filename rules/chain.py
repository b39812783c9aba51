"""The analysis chain as plain data, shared by the window and ``spoolside launch``.

:class:`ChainStep` is one step (a localisation of every frame, or a recipe over earlier outputs);
:func:`to_factories` / :func:`from_factories` convert a chain to and from ``rules.factories``.
:func:`launch_context` is the ONE context a chain is launched with and :func:`rule_for_series` the one
way a chain's first rule is built for a series, so a preset does the same from the window and the
command line. :func:`chain_problems` finds what would make a chain fail (no network);
:func:`expected_outputs` previews the files it writes and :func:`pushed_outputs` lists the files a
pushed chain really writes (``_N`` names included).
"""
from __future__ import annotations

import copy
import functools
import posixpath
from dataclasses import dataclass, field
from typing import Any

import yaml

from .factories import (
    FACTORIES,
    LocalisationRuleFactory,
    RecipeRuleFactory,
    RuleFactory,
    SpoolLocalLocalizationRuleFactory,
    link,
)
from .metadata import MetaDataHandler
from .patterns import PatternError, pattern_context, substitute
from .recipe_check import check_recipe, recipe_file_outputs
from .rule import Rule
from .safeload import load_yaml
from .settings import analysis_problems
from .uris import (
    cluster_path,
    is_cluster_uri,
    make_cluster_uri,
    parse_cluster_uri,
    results_filename_for,
    series_dir,
)

LOCALISATION = "localisation"
RECIPE = "recipe"

#: Analysis settings a new localisation step starts with (PYME's GUI defaults, §5.3).
DEFAULT_ANALYSIS = {
    "Analysis.FitModule": "LatGaussFitFR",
    "Analysis.DetectionThreshold": 1.0,
    "Analysis.BGRange": [-30, 0],
    "Analysis.StartAt": 10,
}
PLACEHOLDER_SERIES = "PYME-CLUSTER:///example/series_01.pcs"
_LOCALISATION_FACTORIES = ("LocalisationRuleFactory", "SpoolLocalLocalizationRuleFactory")


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
    def localisation(cls, analysis: dict | None = None) -> ChainStep:
        return cls(kind=LOCALISATION, analysis=dict(analysis or DEFAULT_ANALYSIS),
                   factory_class="LocalisationRuleFactory")

    @classmethod
    def recipe_step(cls, recipe: str = "", recipe_uri: str = "",
                    input_patterns: dict | None = None, output_dir: str = "") -> ChainStep:
        """A recipe step; by default the way PYME runs one too: no input patterns (it reads what
        the step before passes on, a localisation's results file, as its input ``input``) and no
        output folder (the launch's, i.e. the series folder)."""
        return cls(kind=RECIPE, recipe=recipe, recipe_uri=recipe_uri,
                   input_patterns=dict(input_patterns or {}), output_dir=output_dir,
                   factory_class="RecipeRuleFactory")

    def copy(self) -> ChainStep:
        return copy.deepcopy(self)

    def title(self) -> str:
        """A short label for lists: the kind and the recipe's name or the fit module."""
        if self.kind == LOCALISATION:
            return f"Localise ({self.analysis.get('Analysis.FitModule', '?')})"
        if self.recipe_uri and not self.recipe:
            return "Recipe: " + self.recipe_uri.rstrip("/").rsplit("/", 1)[-1]
        name = recipe_label(self.recipe)
        return f"Recipe: {name}" if name else "Recipe (empty)"

    # -- conversion to and from the engine's factories ------------------------------------------
    def to_factory(self) -> RuleFactory:
        """This step as a ``rules.factories`` factory (not yet chained)."""
        kwargs = copy.deepcopy(self.extra)
        if self.kind == LOCALISATION:
            cls: type[RuleFactory] = (SpoolLocalLocalizationRuleFactory
                                      if self.factory_class == "SpoolLocalLocalizationRuleFactory"
                                      else LocalisationRuleFactory)
            kwargs["analysisMetadata"] = MetaDataHandler(copy.deepcopy(self.analysis))
            return cls(**kwargs)
        if self.recipe:
            kwargs["recipe"] = self.recipe
        elif self.recipe_uri:
            kwargs["recipeURI"] = self.recipe_uri
        if self.input_patterns:
            kwargs["input_patterns"] = dict(self.input_patterns)
        if self.output_dir:
            kwargs["output_dir"] = self.output_dir
        return RecipeRuleFactory(**kwargs)

    @classmethod
    def from_factory(cls, factory: RuleFactory) -> ChainStep:
        """The step a factory describes (its ``on_completion`` is ignored)."""
        name = type(factory).__name__
        kwargs = dict(getattr(factory, "kwargs", {}) or {})
        kwargs.pop("on_completion", None)
        if name in _LOCALISATION_FACTORIES:
            analysis = _from_metadata(kwargs.pop("analysisMetadata", {}))
            return cls(kind=LOCALISATION, analysis=analysis, factory_class=name,
                       extra=copy.deepcopy(kwargs))
        patterns = kwargs.pop("input_patterns", None) or kwargs.pop("input_templates", None) or {}
        return cls(kind=RECIPE, recipe=kwargs.pop("recipe", "") or "",
                   recipe_uri=kwargs.pop("recipeURI", "") or "",
                   input_patterns=dict(patterns), output_dir=kwargs.pop("output_dir", "") or "",
                   factory_class=name, extra=copy.deepcopy(kwargs))


def to_factories(steps: list[ChainStep], *, chained: bool = True) -> list[RuleFactory]:
    """Factories for ``steps`` in order; with ``chained`` each one's ``on_completion`` is the next."""
    factories = [step.to_factory() for step in steps]
    if chained:
        link(factories)
    return factories


def from_factories(factories) -> list[ChainStep]:
    """Steps for a list of factories, or for one factory and its ``on_completion`` chain."""
    if not isinstance(factories, (list, tuple)):
        factories = factories.steps()
    return [ChainStep.from_factory(f) for f in factories]


def _from_metadata(md: Any) -> dict:
    if md is None:
        return {}
    if isinstance(md, dict):
        return copy.deepcopy(md)
    if hasattr(md, "to_dict"):
        return dict(md.to_dict())
    return {key: md[key] for key in md.keys()}


def bundled_name(text: str) -> str | None:
    """The stem of the bundled recipe ``text`` is (comments and blank lines aside), or None."""
    stripped = _strip_comments(text)
    return next((name for name, body in _bundled_texts().items() if body == stripped), None)


def recipe_label(text: str) -> str:
    """The bundled recipe's name when ``text`` is one, else its first and last module names."""
    bundled = bundled_name(text)
    if bundled is not None:
        return bundled.replace("_", " ")
    try:
        modules = load_yaml(text)
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


@functools.lru_cache(maxsize=1)
def _bundled_texts() -> dict[str, str]:
    from resources import resource_path
    folder = resource_path("recipes")
    return {p.stem: _strip_comments(p.read_text(encoding="utf-8"))
            for p in sorted(folder.glob("*.yaml"))} if folder.is_dir() else {}


# -- launching ------------------------------------------------------------------------------------
def launch_context(series_uri: str, first_factory: RuleFactory | None = None,
                   spooler: Any = None) -> dict[str, Any]:
    """The context a chain's first factory gets for ``series_uri`` — PYMEAcquire's (§7): the series
    as ``seriesName``, its folder as ``output_dir``, the series as the recipe input when the chain
    starts with a recipe naming no inputs, and the in-process ``spooler`` when there is one."""
    serverfilter = parse_cluster_uri(series_uri).serverfilter if is_cluster_uri(series_uri) else ""
    context: dict[str, Any] = {"seriesName": series_uri,
                               "output_dir": make_cluster_uri(series_dir(series_uri), serverfilter)}
    if first_factory is not None and first_factory.rule_type == "recipe" and not any(
            first_factory.kwargs.get(k) for k in ("inputs", "input_templates", "input_patterns")):
        context["inputs"] = {"input": [series_uri]}
    if spooler is not None:
        context["spooler"] = spooler
    return context


def preview_context(series_uri: str | None, first_factory: RuleFactory | None = None) -> dict:
    """The ``{{variables}}`` a chain's patterns see for ``series_uri`` (a placeholder when none):
    :func:`launch_context` plus the series names of ``rules.patterns.pattern_context``."""
    series = series_uri or PLACEHOLDER_SERIES
    return pattern_context(series, extra=launch_context(series, first_factory))


def for_series(factories: list[RuleFactory], spooler: Any = None) -> list[RuleFactory]:
    """Copies of ``factories`` (chained) with each localisation step mapped to the rule that fits the
    series at hand: ``SpoolLocalLocalizationRuleFactory`` for the first step when an in-process
    ``spooler`` is given, ``LocalisationRuleFactory`` otherwise (a series on the cluster, complete
    or still spooling) — so PYME's presets, whose tiles are spool-local, run anywhere."""
    copies: list[RuleFactory] = []
    for index, factory in enumerate(factories):
        name = type(factory).__name__
        if name in _LOCALISATION_FACTORIES:
            live = spooler is not None and index == 0
            name = "SpoolLocalLocalizationRuleFactory" if live else "LocalisationRuleFactory"
        cls = FACTORIES.get(name, type(factory))
        copies.append(cls(**{k: v for k, v in factory.kwargs.items() if k != "on_completion"}))
    link(copies)
    return copies


def rule_for_series(factories: list[RuleFactory], series_uri: str, spooler: Any = None) -> Rule:
    """The first rule of a chain for ``series_uri``, ready to push (follow-ons linked). The one way
    the window and ``spoolside launch`` build what they push."""
    if not factories:
        raise ValueError("the chain is empty")
    chain = for_series(list(factories), spooler)
    return chain[0].get_rule(launch_context(series_uri, chain[0], spooler))


def pushed_outputs(rule: Rule) -> list[tuple[str, str]]:
    """``(label, URI)`` of the files a pushed chain really writes, step by step (``_N`` names as
    bound at push time). May ask the data server (whether a name is taken)."""
    outputs: list[tuple[str, str]] = []
    step: Rule | None = rule
    while step is not None:
        files = step.output_files
        if "results" in files:
            outputs.append(("Localisations", files["results"] + "?table=FitResults"))
        else:
            for uri in step.output_bindings().values():
                outputs.append((cluster_path(uri).rsplit("/", 1)[-1], uri))
        step = step.child
    return outputs


# -- checks before launch -------------------------------------------------------------------------
@dataclass(frozen=True)
class StepProblem:
    """Something that would make a step fail; ``field`` says where to show it."""

    row: int
    field: str      # "recipe", "input:<name>", "output_dir", "analysis"
    message: str
    line: int | None = None
    warning: bool = False   # shown, but does not block a launch

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        if self.field.startswith("input:"):
            where = f"input {self.field[6:]!r}: "
        elif self.field == "output_dir":
            where = "output folder: "
        return where + self.message


def resolve(pattern: str, context: dict) -> str:
    """``pattern`` with its ``{{variables}}`` filled in (raises ``rules.patterns.PatternError``)."""
    return substitute(pattern, context)


def main_input(steps: list[ChainStep], row: int, context: dict) -> str:
    """The file step ``row`` reads as its standard input ``input`` (a URI or path, ``''`` when
    none): its ``input`` pattern resolved, else what the launch or the step before passes on — the
    series for a first step, a localisation's results file after one (PYME renames ``results`` to
    ``input``), nothing after a recipe (recipes name no outputs, in PYME as here). Raises
    ``PatternError`` for a pattern with an unknown variable."""
    step = steps[row]
    if "input" in step.input_patterns:
        return resolve(step.input_patterns["input"], context)
    series = str(context.get("seriesName", ""))
    if row == 0:
        return series if not step.input_patterns else ""
    if steps[row - 1].kind == LOCALISATION and series:
        return make_cluster_uri(results_filename_for(series),
                                parse_cluster_uri(series).serverfilter)
    return ""


def _output_dir(step: ChainStep, context: dict) -> str:
    """The bare cluster path a recipe's ``{output_dir}`` stands for: the step's own output folder,
    else the launch context's (the series folder, as PYME's launch gives it); formatted as the
    workers do (scheme and serverfilter dropped). Raises ``PatternError``."""
    return cluster_path(resolve(step.output_dir or str(context.get("output_dir", "")),
                                context)).rstrip("/")


def _written_files(text: str, output_dir: str, reads: str) -> list[str]:
    """Bare cluster paths the ``output.*`` modules of recipe ``text`` write for a task whose input
    ``input`` is ``reads`` (``file_stub`` = its name without extension, as the workers say)."""
    stub = posixpath.splitext(posixpath.basename(cluster_path(reads).rstrip("/")))[0]
    paths = []
    for pattern in recipe_file_outputs(text):
        try:
            paths.append(cluster_path(pattern.format(output_dir=output_dir, file_stub=stub)))
        except (KeyError, IndexError, ValueError):
            continue  # names other context values: not predictable here
    return paths


def chain_problems(steps: list[ChainStep], context: dict, available_modules=None,
                   recipe_texts: dict | None = None, *,
                   bundled_modules: bool = False) -> list[StepProblem]:
    """Every problem of every step, found without the network.

    YAML that does not parse (with its line), a module the cluster cannot run, an analysis setting
    a worker would refuse, an unknown ``{{variable}}`` in a pattern, an input that no earlier step
    produces, and a follow-on recipe given nothing to read. ``recipe_texts`` holds the text of
    recipes given by URI, when fetched. With ``bundled_modules`` the module list is Spoolside's
    bundled one (the cluster publishes none): modules it lacks pass, and what it says of the
    others comes back as warnings (``StepProblem.warning``).
    """
    recipe_texts = recipe_texts or {}
    problems: list[StepProblem] = []
    produced: set[str] = set()
    series = str(context.get("series_name", context.get("seriesName", "")))
    series_path = cluster_path(series)
    for row, step in enumerate(steps):
        if step.kind == LOCALISATION:
            problems += [StepProblem(row, "analysis", message)
                         for message in analysis_problems(step.analysis).values()]
            if series:
                produced.add(results_filename_for(series))
            continue
        if not step.recipe and not step.recipe_uri:
            problems.append(StepProblem(row, "recipe", "no recipe: pick one or type its YAML"))
        text = step.recipe or recipe_texts.get(step.recipe_uri, "")
        if text:
            for p in check_recipe(text, available_modules, unknown_modules_ok=bundled_modules):
                problems.append(StepProblem(row, "recipe", p.message, p.line,
                                            warning=bundled_modules and p.about_modules))
        for name, pattern in step.input_patterns.items():
            field_name = f"input:{name}"
            try:
                path = cluster_path(resolve(pattern, context))
            except PatternError as exc:
                problems.append(StepProblem(row, field_name, _unknown_message(exc)))
                continue
            if row > 0 and not any(c in path for c in "*?[") and path not in produced \
                    and path != series_path:
                problems.append(StepProblem(
                    row, field_name, f"no earlier step produces {path or '(empty)'}"))
        if row > 0 and not step.input_patterns and steps[row - 1].kind != LOCALISATION:
            problems.append(StepProblem(
                row, "input:input", "gets no input: a recipe step passes nothing on to the next "
                                    "one; add an input pattern naming the file this step reads"))
        try:
            output_dir = _output_dir(step, context)
        except PatternError as exc:
            problems.append(StepProblem(row, "output_dir", _unknown_message(exc)))
            continue
        try:
            reads = main_input(steps, row, context)
        except PatternError:
            continue  # flagged at its input above
        produced.update(_written_files(text, output_dir, reads))
    return problems


def step_outputs(steps: list[ChainStep], row: int, context: dict,
                 recipe_texts: dict | None = None) -> list[str]:
    """Bare cluster paths recipe step ``row`` writes if no name is taken (a preview: its
    ``output.*`` modules' patterns with the ``output_dir`` and ``file_stub`` the workers use);
    [] for a localisation step or one whose patterns cannot be resolved."""
    step = steps[row]
    if step.kind == LOCALISATION:
        return []
    try:
        reads = main_input(steps, row, context)
        output_dir = _output_dir(step, context)
    except PatternError:
        return []
    return _written_files(step.recipe or (recipe_texts or {}).get(step.recipe_uri, ""),
                          output_dir, reads)


def expected_outputs(steps: list[ChainStep], series_uri: str, serverfilter: str = "",
                     recipe_texts: dict | None = None) -> list[tuple[str, str]]:
    """``(label, URI)`` of the files a chain would write for ``series_uri`` if no name were taken
    (a preview, no network; after a push :func:`pushed_outputs` says what is really written)."""
    context = preview_context(series_uri)
    outputs: list[tuple[str, str]] = []
    for row, step in enumerate(steps):
        if step.kind == LOCALISATION:
            outputs.append(("Localisations", make_cluster_uri(results_filename_for(series_uri),
                                                              serverfilter) + "?table=FitResults"))
            continue
        for path in step_outputs(steps, row, context, recipe_texts):
            outputs.append((path.rsplit("/", 1)[-1], make_cluster_uri(path, serverfilter)))
    return outputs


def _unknown_message(exc: PatternError) -> str:
    known = ", ".join("{{%s}}" % k for k in exc.known
                      if k not in ("seriesName", "inputs", "spooler") and not k.startswith("inputs."))
    return "unknown variable {{%s}}; known: %s" % (exc.name, known)
