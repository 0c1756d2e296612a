"""Presets: every chapter's `smoke` / `book` / `full` configuration, validated before compute.

Each chapter module in `lossbook.chapters` defines a frozen dataclass `Config` and a dict
`PRESETS = {"smoke": Config(...), "book": Config(...), "full": Config(...)}`. A notebook asks
for `resolve(chapter, preset, overrides)`; an unknown chapter, preset or field, a value of the
wrong type or out of range raises `ConfigError` naming the valid choices.

Values: every number must be finite and ≥ 0; counts of seeds, epochs, steps, batch sizes and
learning rates (by field name, see `POSITIVE`) > 0; a chapter adds its own rules in a dict
`CONSTRAINTS = {field: rule}` next to its `Config` (rules: `one_of`, `at_least`, `between`,
`nonempty`, or any `f(value) -> error message | None`; a rule applies to each item of a tuple).
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import math
import re
import typing
from collections.abc import Callable
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
SEED_LIMIT = 2**32  # seeds feed numpy (< 2**32) and derived torch seeds (1000·seed + k < 2**64)
# fields that must be > 0 in every chapter (a count of zero runs nothing and fails late)
POSITIVE = re.compile(r"^(\w+_)?(seeds|epochs|steps|batch_size|batch|lr|eval_every|probes|"
                      r"restarts|inits|samples|tasks|trials)$")


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
    cfg = dataclasses.replace(module.PRESETS[preset], **checked)
    for name in types:
        check_value(chapter, name, getattr(cfg, name), getattr(module, "CONSTRAINTS", {}))
    return cfg


Rule = Callable[[Any], "str | None"]


def one_of(*choices: str) -> Rule:
    return lambda v: None if v in choices else f"must be one of {', '.join(map(str, choices))}"


def at_least(low: float) -> Rule:
    return lambda v: None if v >= low else f"must be ≥ {low}"


def between(low: float, high: float) -> Rule:
    return lambda v: None if low <= v <= high else f"must be in [{low}, {high}]"


def nonempty(value) -> str | None:
    return None if len(value) else "must not be empty"


def any_value(value) -> None:
    return None


def positive(value) -> str | None:
    return None if value > 0 else "must be > 0"


def default_rule(name: str, value: Any) -> Rule:
    if POSITIVE.match(name) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return positive
    return at_least(0) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else any_value


def check_value(chapter: str, name: str, value: Any, rules: dict[str, Any]) -> None:
    """Raise ConfigError unless `value` of field `name` is finite and obeys its rule(s)."""
    items = value if isinstance(value, tuple) else (value,)
    if name in rules:
        rule = rules[name]
        whole = [r for r in (rule if isinstance(rule, tuple) else (rule,)) if r is nonempty]
        per_item = [r for r in (rule if isinstance(rule, tuple) else (rule,)) if r is not nonempty]
        if whole and isinstance(value, tuple) and nonempty(value):
            raise ConfigError(f"parameter {name} of {chapter} must not be empty")
    else:
        per_item = None
    for item in items:
        if isinstance(item, float) and not math.isfinite(item):
            raise ConfigError(f"parameter {name} of {chapter} must be a finite number, got {item}")
        for rule in per_item if per_item is not None else [default_rule(name, item)]:
            problem = rule(item)
            if problem:
                shown = value if item is value else f"{item!r} in {value!r}"
                raise ConfigError(f"parameter {name} of {chapter} {problem}, got {shown}")


def check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    if not 0 <= seed < SEED_LIMIT:
        raise ConfigError(f"seed must be in 0 … 2**32 − 1, got {seed}")
    return seed


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
