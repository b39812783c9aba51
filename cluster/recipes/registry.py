"""The allow-list of recipe modules by PYME name; YAML names are looked up here, never imported."""
from __future__ import annotations

from rules.recipe_params import param_to_json

from .errors import RecipeError
from .modules import filters, localisations, measurement, output, processing, tablefilters
from .modules.base import RecipeModule

_CLASSES: tuple[type[RecipeModule], ...] = (
    localisations.AddPipelineDerivedVars,
    localisations.DensityMapping,
    localisations.DBSCANClustering,
    tablefilters.FilterTable,
    tablefilters.Mapping,
    filters.GaussianFilter,
    processing.SimpleThreshold,
    processing.Label,
    measurement.Measure2D,
    output.CSVOutput,
    output.HDFOutput,
    output.ImageOutput,
)

#: ``prefix.Name`` → module class.
MODULES: dict[str, type[RecipeModule]] = {cls.name: cls for cls in _CLASSES}

#: Bare legacy names (``GaussianFilter``) → module class; a bare name is unique among ours.
LEGACY: dict[str, type[RecipeModule]] = {cls.name.split(".", 1)[1]: cls for cls in _CLASSES}


def module_schema() -> dict[str, dict]:
    """Every module's parameter declarations as JSON data: ``{name: {"params": [...]}}`` (what the
    embedded cluster publishes as ``RECIPES/spoolside_modules.json`` for the chain editor)."""
    return {name: {"params": [param_to_json(p) for p in cls.params]}
            for name, cls in sorted(MODULES.items())}


def lookup(name: str) -> type[RecipeModule]:
    """The class for a recipe module name, or a :class:`RecipeError` listing the available ones."""
    cls = MODULES.get(name) if "." in name else LEGACY.get(name)
    if cls is None:
        raise RecipeError(f"unknown recipe module {name!r} (available: {', '.join(sorted(MODULES))})")
    return cls
