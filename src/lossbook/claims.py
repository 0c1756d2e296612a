"""Claims: the paper's statements, our numbers beside them, and a verdict from those numbers."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Claim:
    id: str
    statement: str
    paper: str
    ours: str
    holds: bool | None  # None: not tested at this preset
    note: str = ""

    @property
    def verdict(self) -> str:
        return {True: "held", False: "not held", None: "not tested"}[self.holds]

    def to_dict(self) -> dict:
        return {**asdict(self), "verdict": self.verdict}


VERDICT_MARK = {"held": "✅ held", "not held": "❌ not held", "not tested": "➖ not tested"}


def markdown_table(headers: list[str], rows: list[list]) -> str:
    """A GitHub/MyST markdown table; cells are converted with str()."""
    def clean(cell) -> str:
        return str(cell).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(clean(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def code(value) -> str:
    """A value as inline code in a table: dicts as JSON, the empty string as `""`."""
    text = json.dumps(value) if isinstance(value, dict) else str(value)
    return f"`{text}`" if text else '`""`'


def claims_markdown(claims: list[Claim]) -> str:
    rows = [[c.statement, c.paper, c.ours, VERDICT_MARK[c.verdict] + (f" — {c.note}" if c.note
             else "")] for c in claims]
    return markdown_table(["Claim", "Paper", "Ours", "Verdict"], rows)


def summarize(claims: list[dict]) -> dict[str, int]:
    counts = {"held": 0, "not held": 0, "not tested": 0}
    for claim in claims:
        counts[claim["verdict"]] += 1
    return counts
