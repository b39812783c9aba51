"""Bundled data: recipes, presets and icons."""
from importlib import resources as _resources
from pathlib import Path


def resource_path(*parts: str) -> Path:
    """Path of a bundled resource file, e.g. ``resource_path("recipes", "render_image.yaml")``."""
    return Path(str(_resources.files(__name__).joinpath(*parts)))
