"""The one error a recipe run raises: its message names the culprit (module, parameter, input, line)."""
from __future__ import annotations


class RecipeError(Exception):
    """A recipe could not be parsed or run; the message says which module, parameter or input."""
