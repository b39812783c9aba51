"""``output.*``: save tables and images through the cluster's write-once ``write_file``.

``filePattern`` is formatted with the save context (§2.4: ``output_dir``, ``file_stub``, ...) by a
formatter that only substitutes plain names (no attribute or index lookups). Both cluster schemes
(``pyme-cluster://`` and ``pyme-cluster:// - aggregate``) write through ``write_file`` to the
formatted cluster path; ``File`` (worker-local paths) is refused.
"""
from __future__ import annotations

import string
from typing import Any, Callable

from rules.uris import check_name

from ..datatypes import Image, Table
from ..errors import RecipeError
from ..fileio import FormatError, write_csv, write_results, write_tiff
from .base import Param, RecipeModule

SCHEMES = ("File", "pyme-cluster://", "pyme-cluster:// - aggregate")


class _PlainFormatter(string.Formatter):
    def get_field(self, field_name, args, kwargs):
        if not field_name.isidentifier():
            raise KeyError(field_name)
        return self.get_value(field_name, args, kwargs), field_name


class OutputModule(RecipeModule):
    is_output = True
    default_pattern = "{output_dir}/{file_stub}"

    def validate(self):
        if self.p["scheme"] == "File":
            raise self.error("scheme 'File' (worker-local files; PYME's default when scheme is not "
                             "given) is not supported on this cluster; use 'pyme-cluster://'")

    def run(self, namespace):  # outputs are written by save()
        return None

    def path(self, context: dict[str, Any]) -> str:
        pattern = self.p["filePattern"]
        try:
            formatted = _PlainFormatter().vformat(pattern, (), context)
        except KeyError as exc:
            name = exc.args[0]
            hint = " (a recipe rule needs output_dir to save outputs)" if name == "output_dir" else ""
            raise self.error(f"filePattern {pattern!r} uses {{{name}}}, which the task context lacks"
                             f"{hint}; available: {', '.join(sorted(context))}") from None
        except (ValueError, IndexError) as exc:
            raise self.error(f"bad filePattern {pattern!r}: {exc}") from exc
        try:
            return check_name(formatted)
        except ValueError as exc:
            raise self.error(f"filePattern {pattern!r} gave {formatted!r}: {exc}") from exc

    def write(self, context, write, data: bytes) -> list[str]:
        return [write(self.path(context), data)]


class CSVOutput(OutputModule):
    """Save one table as CSV (header row of column names)."""

    name = "output.CSVOutput"
    params = (
        Param("inputName", "str", "output", "input"),
        Param("filePattern", "str", "{output_dir}/{file_stub}.csv"),
        Param("scheme", "choice", "File", choices=SCHEMES),
    )

    def save(self, namespace, context, write: Callable[[str, bytes], str]) -> list[str]:
        return self.write(context, write, write_csv(self.table(namespace, "inputName")))


class HDFOutput(OutputModule):
    """Save tables (``inputVariables`` = {namespace key: table name}) in one PyTables HDF5 file."""

    name = "output.HDFOutput"
    params = (
        Param("inputVariables", "strmap", {}),
        Param("filePattern", "str", "{output_dir}/{file_stub}.hdf"),
        Param("scheme", "choice", "File", choices=SCHEMES),
    )

    def validate(self):
        super().validate()
        if not self.p["inputVariables"]:
            raise self.error("inputVariables is empty: name at least one table to save")
        for table_name in self.p["inputVariables"].values():
            if not table_name.isidentifier():
                raise self.error(f"table name {table_name!r} in inputVariables is not a valid name")

    def input_names(self):
        return [k for k in self.p["inputVariables"] if k]

    def save(self, namespace, context, write):
        named, metadata = {}, {}
        for key, table_name in self.p["inputVariables"].items():
            if key not in namespace:
                raise RecipeError(f"module {self.label()} needs input {key!r}, "
                                  "which no input or earlier module provides")
            value = namespace[key]
            if not isinstance(value, Table):
                raise self.error(f"input {key!r} is not a table; HDFOutput saves tables only")
            named[table_name] = value
            metadata.update(value.metadata)
        try:
            data = write_results(named, metadata)
        except FormatError as exc:
            raise self.error(str(exc)) from exc
        return self.write(context, write, data)


class ImageOutput(OutputModule):
    """Save an image as an ImageJ TIFF that carries its pixel size and origin."""

    name = "output.ImageOutput"
    params = (
        Param("inputName", "str", "output", "input"),
        Param("filePattern", "str", "{output_dir}/{file_stub}.tif"),
        Param("scheme", "choice", "File", choices=SCHEMES),
    )

    def save(self, namespace, context, write):
        image: Image = self.image(namespace, "inputName")
        try:
            data = write_tiff(image)
        except FormatError as exc:
            raise self.error(str(exc)) from exc
        return self.write(context, write, data)
