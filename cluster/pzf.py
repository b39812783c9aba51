"""PZF frame files: the codec lives in :mod:`rules.pzf` (the engine's importer writes frames too)."""
from rules.pzf import *  # noqa: F401,F403
from rules.pzf import __all__  # noqa: F401
