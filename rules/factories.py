"""Rule factories: a pattern for a rule (or a chain of rules), turned into rules per series."""
from __future__ import annotations

import logging
from typing import Any

from .localisation import LocalisationRule, SpoolLocalLocalizationRule
from .recipe import RecipeRule
from .rule import Rule

logger = logging.getLogger(__name__)


class RuleFactory:
    """Create rules of ``rule_class`` from stored keyword arguments plus a per-series context.

    Parameters
    ----------
    on_completion : RuleFactory, optional
        the step to run after this one (also settable with :meth:`chain`).
    rule_class : type
        the :class:`~rules.rule.Rule` subclass built by :meth:`get_rule`.
    kwargs
        the rule's arguments (series-specific ones may come in the context instead).
    """

    rule_class: type[Rule] = Rule

    def __init__(self, on_completion: RuleFactory | None = None, rule_class: type[Rule] | None = None,
                 **kwargs: Any):
        if rule_class is not None:
            self.rule_class = rule_class
        if on_completion is not None and not isinstance(on_completion, RuleFactory):
            raise TypeError("on_completion must be a RuleFactory")
        self._on_completion = on_completion
        self._rule_kwargs = dict(kwargs)

    @property
    def kwargs(self) -> dict[str, Any]:
        """A copy of the stored rule arguments (what a preset saves; the GUI reads it)."""
        return dict(self._rule_kwargs)

    @property
    def on_completion(self) -> RuleFactory | None:
        """The next step of the chain, or None."""
        return self._on_completion

    @property
    def rule_type(self) -> str | None:
        """``'localization'`` or ``'recipe'``."""
        return self.rule_class.rule_type

    def chain(self, on_completion: RuleFactory | None) -> RuleFactory | None:
        """Set the step run after this one; returns it, so ``a.chain(b).chain(c)`` builds a chain."""
        if on_completion is not None and not isinstance(on_completion, RuleFactory):
            raise TypeError("chain() takes a RuleFactory")
        if on_completion is not None and self in on_completion.steps():
            raise ValueError("chaining this step would make a loop")
        self._on_completion = on_completion
        return on_completion

    def steps(self) -> list[RuleFactory]:
        """This factory and every factory chained after it, in order."""
        result: list[RuleFactory] = []
        step: RuleFactory | None = self
        while step is not None:
            if any(step is s for s in result):
                raise ValueError("the chain of steps has a loop")
            result.append(step)
            step = step._on_completion
        return result

    def get_rule(self, context: dict[str, Any] | None = None) -> Rule:
        """A rule for one series: the stored arguments, with ``context`` filling anything not set.

        The context supplies series-specific values (``seriesName``, ``spooler``, ``output_dir``,
        ...) and extra ``{{name}}`` pattern variables; an argument stored in the factory wins over a
        context value of the same name. The returned rule is fully linked to its follow-ons.
        """
        kwargs = dict(context or {})
        kwargs.update(self._rule_kwargs)
        kwargs.pop("on_completion", None)
        return self.rule_class(on_completion=self._on_completion, **kwargs)

    def __repr__(self) -> str:
        keys = ", ".join(sorted(self._rule_kwargs))
        return f"{type(self).__name__}({keys})"


class LocalisationRuleFactory(RuleFactory):
    """Factory for :class:`~rules.localisation.LocalisationRule`; needs ``seriesName`` (usually from
    the context) and ``analysisMetadata``."""

    rule_class = LocalisationRule

    def __init__(self, on_completion: RuleFactory | None = None, **kwargs: Any):
        super().__init__(on_completion=on_completion, **kwargs)


class SpoolLocalLocalizationRuleFactory(RuleFactory):
    """Factory for :class:`~rules.localisation.SpoolLocalLocalizationRule`; needs ``spooler`` and
    ``seriesName`` (usually from the context) and ``analysisMetadata``."""

    rule_class = SpoolLocalLocalizationRule

    def __init__(self, on_completion: RuleFactory | None = None, **kwargs: Any):
        super().__init__(on_completion=on_completion, **kwargs)


class RecipeRuleFactory(RuleFactory):
    """Factory for :class:`~rules.recipe.RecipeRule` (``recipe`` or ``recipeURI``, inputs,
    ``output_dir``)."""

    rule_class = RecipeRule

    def __init__(self, on_completion: RuleFactory | None = None, **kwargs: Any):
        super().__init__(on_completion=on_completion, **kwargs)


#: The factory classes presets may name (an allow-list: names from files go through this table).
FACTORIES: dict[str, type[RuleFactory]] = {
    cls.__name__: cls for cls in (LocalisationRuleFactory, SpoolLocalLocalizationRuleFactory,
                                  RecipeRuleFactory)}


def link(factories: list[RuleFactory]) -> RuleFactory | None:
    """Chain ``factories`` in order (``factories[i].chain(factories[i+1])``); return the first."""
    for first, second in zip(factories, factories[1:]):
        first.chain(second)
    if factories:
        factories[-1].chain(None)
    return factories[0] if factories else None
