"""Run a recipe over a task's inputs: load the namespace, order modules by data flow, save outputs."""
from __future__ import annotations

import logging
import posixpath
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from rules.uris import check_name

from .errors import RecipeError
from .fileio import FormatError, read_csv, read_results, read_tiff
from .modules.base import RecipeModule
from .parser import parse_recipe

logger = logging.getLogger(__name__)

RESULTS_EXTENSIONS = (".h5r", ".hdf", ".h5")
IMAGE_EXTENSIONS = (".tif", ".tiff")
#: Exceptions from module code that become a RecipeError naming the module.
_MODULE_ERRORS = (ValueError, TypeError, KeyError, IndexError, ArithmeticError, MemoryError)


def split_uri(uri: str) -> tuple[str, str | None]:
    """``(uri without query, table)`` for ``…/x.h5r?table=T`` (table None when not given)."""
    if "?" not in uri:
        return uri, None
    base, query = uri.split("?", 1)
    tables = parse_qs(query).get("table")
    return base, (tables[0] if tables else None)


def _path_of(uri: str) -> str:
    """The path part of a cluster URI (no scheme, serverfilter or query) or of a local path."""
    base, _ = split_uri(uri)
    if "://" in base:
        parts = urlsplit(base)
        return parts.path
    return base


def load_inputs(inputs: dict[str, str], read_file: Callable[[str], bytes]) -> dict[str, Any]:
    """The namespace PYME builds from task inputs (§6): results tables by name, images by key."""
    namespace: dict[str, Any] = {}
    for key, uri in inputs.items():
        if key == "__sim":
            continue
        if not isinstance(uri, str) or not uri:
            raise RecipeError(f"input {key!r} must be a URI or path, got {uri!r}")
        base, table = split_uri(uri)
        ext = posixpath.splitext(_path_of(base))[1].lower()
        if ext not in RESULTS_EXTENSIONS + IMAGE_EXTENSIONS + (".csv",):
            raise RecipeError(f"input {key!r} ({uri}): unsupported file type {ext or '(none)'!r}; "
                              "recipes read .h5r/.hdf/.h5 results, .tif/.tiff images and .csv tables")
        try:
            data = read_file(base)
        except FileNotFoundError as exc:
            raise RecipeError(f"input {key!r} ({base}) not found") from exc
        try:
            if ext in RESULTS_EXTENSIONS:
                found = read_results(data, table)
                if table is not None:
                    namespace[key] = found[table]
                else:
                    for name, value in found.items():
                        namespace[name if key == "input" else f"{key}_{name}"] = value
            elif ext in IMAGE_EXTENSIONS:
                namespace[key] = read_tiff(data)
            else:
                namespace[key] = read_csv(data)
        except FormatError as exc:
            raise RecipeError(f"input {key!r} ({uri}): {exc}") from exc
    return namespace


def save_context(context: dict[str, Any], inputs: dict[str, str]) -> dict[str, Any]:
    """The output context of §2.4, filling ``file_stub``/``input_dir`` from ``inputs['input']``."""
    ctx = {k: v for k, v in context.items() if v is not None}
    source = inputs.get("input")
    if source:
        path = _path_of(source)
        ctx.setdefault("file_stub", posixpath.splitext(posixpath.basename(path))[0])
        ctx.setdefault("input_dir", posixpath.dirname(path).lstrip("/"))
    if isinstance(ctx.get("output_dir"), str) and ctx["output_dir"]:
        try:
            ctx["output_dir"] = check_name(ctx["output_dir"].rstrip("/"))
        except ValueError as exc:
            raise RecipeError(f"task output_dir {context['output_dir']!r}: {exc}") from exc
    return ctx


def schedule(modules: list[RecipeModule], available: set[str]) -> list[RecipeModule]:
    """Processing modules in an order where each runs after what it reads (list order otherwise)."""
    producers: dict[str, RecipeModule] = {}
    for module in modules:
        for name in module.output_names():
            if name in producers:
                raise RecipeError(f"modules {producers[name].label()} and {module.label()} "
                                  f"both write {name!r}")
            producers[name] = module
    have = set(available)
    pending = [m for m in modules if not m.is_output]
    ordered = []
    while pending:
        ready = next((m for m in pending if all(n in have for n in m.input_names())), None)
        if ready is None:
            break
        ordered.append(ready)
        pending.remove(ready)
        have.update(ready.output_names())
    for module in pending + [m for m in modules if m.is_output]:
        for name in module.input_names():
            if name not in have and name not in producers:
                raise RecipeError(f"module {module.label()} needs input {name!r}, which no input or "
                                  f"earlier module provides (available: {', '.join(sorted(have)) or 'none'})"
                                  "; if it comes from an earlier step's results file, that step "
                                  "wrote no such table (its tasks failed or found nothing)")
    if pending:
        raise RecipeError("modules " + ", ".join(m.label() for m in pending) +
                          " depend on each other in a cycle")
    return ordered


def run_recipe(recipe_text: str, inputs: dict[str, str], *, read_file: Callable[[str], bytes],
               write_file: Callable[[str, bytes], str], context: dict[str, Any]) -> list[str]:
    """Parse and run a recipe; return the cluster paths its output modules wrote."""
    modules = parse_recipe(recipe_text)
    namespace = load_inputs(inputs, read_file)
    ctx = save_context(context, inputs)
    for module in schedule(modules, set(namespace)):
        logger.debug("running %s", module.label())
        try:
            module.run(namespace)
        except RecipeError:
            raise
        except _MODULE_ERRORS as exc:
            raise RecipeError(f"module {module.label()} failed: {type(exc).__name__}: {exc}") from exc
    written: list[str] = []
    for module in modules:
        if module.is_output:
            written.extend(module.save(namespace, ctx, write_file))
    logger.info("recipe wrote %s", ", ".join(written) or "nothing")
    return written


__all__ = ["run_recipe", "load_inputs", "save_context", "schedule", "split_uri"]
