"""PYME recipes for the embedded cluster's workers: parse YAML, run allow-listed modules, save.

``run_recipe(recipe_text, inputs, read_file=..., write_file=..., context=...)`` is the entry point;
every failure is a :class:`RecipeError` whose message names the module, parameter, input or line.
"""
from .datatypes import Image, Table
from .errors import RecipeError
from .parser import parse_recipe
from .registry import MODULES
from .runner import run_recipe

__all__ = ["Image", "MODULES", "RecipeError", "Table", "parse_recipe", "run_recipe"]
