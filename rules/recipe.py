"""Recipe rules: run a PYME recipe once per set of inputs (§2.1, §3.3)."""
from __future__ import annotations

import logging
import posixpath
from typing import Any

from .patterns import substitute
from .recipe_check import recipe_file_outputs
from .rule import Rule
from .templates import recipe_template, render_template
from .uris import cluster_path, make_cluster_uri, parse_cluster_uri

logger = logging.getLogger(__name__)

_GLOB_CHARS = set("*?[")


def _is_glob(text: str) -> bool:
    return any(c in _GLOB_CHARS for c in text)


def _bind(uri: str, bound: dict) -> str:
    """``uri`` with its path replaced by the file really written for it (query kept), if bound."""
    path, sep, query = uri.partition("?")
    actual = bound.get(cluster_path(path))
    if actual is None:
        return uri
    return actual.partition("?")[0] + sep + query


def _stub(uri: str) -> str:
    return posixpath.splitext(posixpath.basename(cluster_path(uri).rstrip("/")))[0]


class RecipeRule(Rule):
    """Run a recipe over inputs on the cluster.

    Parameters
    ----------
    recipe : str or recipe object
        the recipe as YAML text (or an object with ``toYAML()``); else give ``recipeURI``.
    recipeURI : str
        a cluster URI of the recipe text.
    output_dir : str, optional
        where the recipe's outputs go; ``{{name}}`` patterns are substituted from the context.
    inputs : dict, optional
        recipe input name → list of URIs, or a glob (expanded to full ``PYME-CLUSTER://`` URIs) or a
        single URI. One task per element; all lists have the same length (a single value is shared).
    input_templates, input_patterns : dict, optional
        like ``inputs``, with ``{{name}}`` patterns substituted from the context first (same meaning;
        PYME's ``{0[key]}`` syntax is not needed). ``inputs`` wins for a name given in both.
    rule_outputs : dict, optional
        set when chained: the previous step's outputs. They (plus any patterns) become the literal
        inputs of the single follow-on task, since the server ignores ``inputsByTask`` there.
    """

    rule_type = "recipe"

    def __init__(self, recipe=None, recipeURI: str | None = None, output_dir: str | None = None,
                 **kwargs: Any):
        self._inputs = kwargs.pop("inputs", None)
        templates = kwargs.pop("input_templates", None)
        patterns = kwargs.pop("input_patterns", None)
        rule_outputs = kwargs.pop("rule_outputs", None)
        self._bound: dict[str, str] = dict(kwargs.get("bound_outputs") or {})
        super().__init__(**kwargs)
        if recipe is not None and not isinstance(recipe, str) and hasattr(recipe, "toYAML"):
            recipe = recipe.toYAML()
        if recipe is not None and not isinstance(recipe, str):
            raise TypeError(f"recipe must be YAML text, not {type(recipe).__name__}")
        if recipe and recipeURI:
            raise ValueError("give either recipe (YAML text) or recipeURI, not both")
        if not recipe and not recipeURI:
            raise ValueError("a recipe step needs recipe (YAML text) or recipeURI")
        if recipeURI is not None and not isinstance(recipeURI, str):
            raise TypeError("recipeURI must be a string")
        if templates and patterns:
            merged = dict(templates)
            merged.update(patterns)
            templates = merged
        else:
            templates = templates or patterns
        for name, value in (("inputs", self._inputs), ("input_patterns", templates),
                            ("rule_outputs", rule_outputs)):
            if value is not None and not isinstance(value, dict):
                raise TypeError(f"{name} must be a mapping of recipe input name to URIs")
        self.recipe = recipe or None
        self.recipeURI = recipeURI or None
        self._output_dir = output_dir
        self._templates = templates or {}
        self.rule_outputs = rule_outputs
        if rule_outputs is not None:
            self._context["rule_outputs"] = dict(rule_outputs)
        self._task_inputs: dict | None = None
        self._n_tasks: int | None = None
        self._nominal_input = ""
        self._bindings: dict[str, str] | None = None

    # -- patterns ---------------------------------------------------------------------------
    def _substitute(self, text: str) -> str:
        return substitute(text, self.pattern_variables())

    @property
    def output_dir(self) -> str | None:
        """``output_dir`` with its ``{{name}}`` patterns substituted."""
        if self._output_dir in (None, ""):
            return None
        return self._substitute(str(self._output_dir))

    # -- inputs -----------------------------------------------------------------------------
    def _resolved_inputs(self) -> dict[str, list[str]]:
        """Every input name → list of strings (patterns substituted; globs not yet expanded)."""
        result: dict[str, list[str]] = {}
        for name, value in self._templates.items():
            values = value if isinstance(value, (list, tuple)) else [value]
            result[name] = [self._substitute(str(v)) for v in values]
        for name, value in (self._inputs or {}).items():
            if isinstance(value, (list, tuple)):
                result[name] = [str(v) for v in value]
            elif isinstance(value, str):
                result[name] = [value]
            else:
                raise TypeError(f"input {name!r}: expected a URI, a glob or a list, "
                                f"not {type(value).__name__}")
        return result

    def _expand(self, name: str, values: list[str]) -> list[str]:
        expanded: list[str] = []
        for value in values:
            if _is_glob(value):
                matches = self.cluster.data.cglob(value)
                if not matches:
                    raise ValueError(f"input {name!r}: glob {value!r} matched no file on the cluster")
                expanded.extend(matches)
            else:
                expanded.append(value)
        return expanded

    def _compute_inputs(self) -> None:
        if self._task_inputs is not None:
            return
        resolved = self._resolved_inputs()
        if self.rule_outputs is not None:  # chained: one task, literal inputs
            inputs: dict[str, str] = {k: v for k, v in self.rule_outputs.items()}
            nominal = dict(inputs)
            for name, values in resolved.items():
                if len(values) != 1 or _is_glob(values[0]):
                    raise ValueError(f"input {name!r} of a follow-on recipe step must be one URI "
                                     f"(follow-on inputs are fixed when the chain is pushed), got {values}")
                nominal[name] = values[0]
                # a pattern names what an earlier step would write; read what it really writes
                inputs[name] = _bind(values[0], self._bound)
            reverse = {cluster_path(v): k for k, v in self._bound.items()}
            main = nominal.get("input", "")
            self._nominal_input = reverse.get(cluster_path(main), main) if main else ""
            if not inputs:
                logger.warning("follow-on recipe step has no inputs (its parent names no outputs "
                               "and it has no input patterns)")
            self._task_inputs = inputs
            self._n_tasks = 1
            return
        if not resolved:
            raise ValueError("a recipe step needs inputs, input_patterns (or input_templates), "
                             "or a previous step whose outputs it takes")
        lists = {name: self._expand(name, values) for name, values in resolved.items()}
        n = max(len(v) for v in lists.values())
        for name, values in lists.items():
            if len(values) not in (1, n):
                raise ValueError(f"recipe inputs have different lengths: "
                                 f"{ {k: len(v) for k, v in lists.items()} }")
        self._task_inputs = {
            k: {name: (values[k] if len(values) > 1 else values[0]) for name, values in lists.items()}
            for k in range(n)}
        self._n_tasks = n

    def output_bindings(self) -> dict[str, str]:
        """For a one-task rule: the files its ``output.*`` modules would write for the nominal
        input → the files they will write for the bound one (the first free ``_N`` name, as the
        workers choose it). {} for a rule of several tasks or a recipe that cannot be read."""
        if self._bindings is not None:
            return dict(self._bindings)
        self._compute_inputs()
        bindings: dict[str, str] = {}
        if self._n_tasks == 1:
            assert self._task_inputs is not None
            task = self._task_inputs if self.rule_outputs is not None else self._task_inputs[0]
            actual_input = str(task.get("input", ""))
            nominal_input = self._nominal_input or actual_input
            text = self.recipe or self._recipe_text()
            output_dir = self.output_dir or posixpath.dirname(cluster_path(actual_input))
            output_dir = cluster_path(output_dir).rstrip("/")
            serverfilter = parse_cluster_uri(actual_input).serverfilter \
                or parse_cluster_uri(str(self._context.get("seriesName", ""))).serverfilter
            for pattern in recipe_file_outputs(text):
                try:
                    nominal = pattern.format(output_dir=output_dir, file_stub=_stub(nominal_input))
                    wanted = pattern.format(output_dir=output_dir, file_stub=_stub(actual_input))
                except (KeyError, IndexError, ValueError):
                    continue  # names other context values: not predictable here
                actual = self._free_name(cluster_path(wanted))
                bindings[cluster_path(nominal)] = make_cluster_uri(actual, serverfilter)
        self._bindings = bindings
        return dict(bindings)

    def _recipe_text(self) -> str:
        if not self.recipeURI:
            return ""
        try:
            return self.cluster.data.get_file(self.recipeURI).decode("utf-8")
        except (OSError, ValueError, UnicodeDecodeError):
            logger.warning("recipe %s could not be read to predict its outputs", self.recipeURI)
            return ""

    def _free_name(self, path: str) -> str:
        """``path``, or ``<stem>_1<ext>``, ``_2``, ... as the workers' write-once saves choose."""
        stem, ext = posixpath.splitext(path)
        for n in range(1000):
            candidate = path if n == 0 else f"{stem}_{n}{ext}"
            if not self.cluster.data.exists(candidate):
                return candidate
        return path

    @property
    def n_tasks(self) -> int:
        """Number of tasks (input sets) this rule runs."""
        self._compute_inputs()
        return int(self._n_tasks or 0)

    def _inputs_by_task(self) -> dict | None:
        self._compute_inputs()
        if self.rule_outputs is not None:
            return None
        return self._task_inputs

    def _task_template(self) -> str:
        self._compute_inputs()
        literal = self._task_inputs if self.rule_outputs is not None else None
        return render_template(recipe_template(recipe_text=self.recipe, recipe_uri=self.recipeURI,
                                               output_dir=self.output_dir, inputs=literal))

    # -- push -------------------------------------------------------------------------------
    def prepare(self) -> dict[str, int]:
        n = self.n_tasks
        return {"max_tasks": n, "release_start": 0, "release_end": n}

    @property
    def complete(self) -> bool:
        return True

    @property
    def data_complete(self) -> bool:
        return True
