"""Presets: every chapter's `smoke` / `book` / `full` configuration, validated before compute.

Each chapter module in `lossbook.chapters` defines a frozen dataclass `Config` and a dict
`PRESETS = {"smoke": Config(...), "book": Config(...), "full": Config(...)}`. A notebook asks
for `resolve(chapter, preset, overrides)`; an unknown chapter, preset or field, or a value of the
wrong type, raises `ConfigError` naming the valid choices.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import typing
from types import ModuleType
from typing import Any

CHAPTERS: dict[str, str] = {
    "01_compsum": "lossbook.chapters.compsum",
    "02_dhkd": "lossbook.chapters.dhkd",
    "03_hessian_alignment": "lossbook.chapters.hessian_alignment",
    "04_am_ssl_sv": "lossbook.chapters.am_ssl_sv",
    "05_icl_gd": "lossbook.chapters.icl_gd",
    "06_ldam_drw": "lossbook.chapters.ldam_drw",
}
PRESET_NAMES = ("smoke", "book", "full")


class ConfigError(ValueError):
    """A chapter, preset or parameter that does not exist, or a value of the wrong type."""


def chapter_module(chapter: str) -> ModuleType:
    if chapter not in CHAPTERS:
        raise ConfigError(f"unknown chapter {chapter!r}; valid chapters: {', '.join(CHAPTERS)}")
    return importlib.import_module(CHAPTERS[chapter])


def field_types(config_cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(config_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_cls)}


def resolve(chapter: str, preset: str, overrides: dict[str, Any] | None = None):
    """The chapter's config for `preset`, with `overrides` applied and type-checked."""
    module = chapter_module(chapter)
    if not isinstance(preset, str) or preset not in module.PRESETS:
        raise ConfigError(
            f"unknown preset {preset!r} for chapter {chapter}; "
            f"valid presets: {', '.join(module.PRESETS)}"
        )
    overrides = dict(overrides or {})
    types = field_types(module.Config)
    unknown = sorted(set(overrides) - set(types))
    if unknown:
        raise ConfigError(
            f"unknown parameter(s) {', '.join(unknown)} for chapter {chapter}; "
            f"valid parameters: {', '.join(types)}"
        )
    checked = {name: check_type(name, value, types[name]) for name, value in overrides.items()}
    return dataclasses.replace(module.PRESETS[preset], **checked)


def check_type(name: str, value: Any, expected: Any) -> Any:
    """Return `value` converted to `expected` (int→float, list→tuple) or raise ConfigError."""
    origin = typing.get_origin(expected)
    if origin is tuple:
        (item_type, *_) = typing.get_args(expected)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"parameter {name} must be a list of {item_type.__name__}, "
                              f"got {type(value).__name__} {value!r}")
        return tuple(check_type(f"{name}[{i}]", v, item_type) for i, v in enumerate(value))
    if origin is typing.Union or origin is getattr(__import__("types"), "UnionType", None):
        options = typing.get_args(expected)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is not type(None):
                try:
                    return check_type(name, value, option)
                except ConfigError:
                    pass
        raise ConfigError(f"parameter {name} must be of type {expected}, got {value!r}")
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is int and isinstance(value, bool):
        raise ConfigError(f"parameter {name} must be int, got bool {value!r}")
    if not isinstance(value, expected):
        raise ConfigError(
            f"parameter {name} must be {expected.__name__}, got {type(value).__name__} {value!r}"
        )
    return value


def parse_cli_value(text: str) -> Any:
    """`-p key=value` from the command line: a Python/JSON literal, else a plain string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return {"true": True, "false": False}.get(text.lower(), text)


def describe(chapter: str) -> str:
    """A table of the chapter's parameters and their values in every preset."""
    module = chapter_module(chapter)
    presets = list(module.PRESETS)
    rows = [["parameter", *presets]]
    for name in field_types(module.Config):
        rows.append([name, *(repr(getattr(module.PRESETS[p], name)) for p in presets)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)
