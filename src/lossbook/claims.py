"""Claims: the paper's statements, our numbers beside them, and a verdict from those numbers.

One statistical protocol decides every seeded claim of the book:

- the evidence is a *paired effect*: per seed, the metric of A minus the metric of B (the same
  seed trains both), or a single per-seed quantity;
- its Student-t interval over the seeds (df = n − 1, 95 %) is compared with a threshold stated
  in the chapter before the result (a minimum effect size, or an equivalence margin);
- the verdict is three-valued: *held* when the whole interval is on the claimed side of the
  threshold, *not held* when the whole interval is on the other side, *inconclusive* otherwise.
  A null claim ("does not change") is held when the interval lies inside ± margin (TOST), not held
  when it lies wholly outside. A "best of" claim is the same test against the runner-up by mean.
  A claim with several conditions (tasks, imbalance ratios) holds when every condition holds and
  fails when any fails.

Claim kinds: `paper` (an empirical claim of the paper: the reproduction score), `identity`
(a derivation or implementation check, decided by a tolerance) and `context` (a claim that is not
the paper's). A claim whose verdict changed under fresh seeds in the last audit
(`lossbook audit`, `book/audit/<chapter>.json`) is reported *inconclusive*.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field

LEVEL = 0.95
MIN_SEEDS = 5
KINDS = ("paper", "identity", "context")
VERDICTS = ("held", "not held", "inconclusive", "not tested")
DIRECTIONS = ("greater", "less", "equivalent")


@dataclass(frozen=True)
class Effect:
    """A paired effect over seeds and its t-interval."""
    values: list[float]          # per-seed effect (a − b)
    mean: float
    low: float
    high: float
    level: float = LEVEL

    @property
    def n(self) -> int:
        return len(self.values)


def paired_interval(a, b=None, level: float = LEVEL) -> Effect:
    """Mean of the per-seed differences a − b (or of a) and its Student-t interval (df = n − 1).

    With one seed the interval is unbounded: one run cannot decide anything.
    """
    from scipy import stats

    a = [float(x) for x in a]
    diffs = a if b is None else [x - float(y) for x, y in zip(a, b, strict=True)]
    if not diffs:
        raise ValueError("a paired effect needs at least one seed")
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return Effect(diffs, mean, -math.inf, math.inf, level)
    half = stats.t.ppf((1 + level) / 2, len(diffs) - 1) * statistics.stdev(diffs) \
        / math.sqrt(len(diffs))
    return Effect(diffs, mean, mean - half, mean + half, level)


def decide(effect: Effect, threshold: float = 0.0, direction: str = "greater") -> str:
    """held / not held / inconclusive from the interval and a threshold fixed in advance.

    greater: the claim is effect > threshold; less: effect < threshold; equivalent: |effect| <
    threshold (a null claim; `threshold` is the equivalence margin, > 0).
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; valid: {', '.join(DIRECTIONS)}")
    lo, hi = effect.low, effect.high
    if direction == "equivalent":
        if threshold <= 0:
            raise ValueError("a null claim needs an equivalence margin > 0")
        if -threshold < lo and hi < threshold:
            return "held"
        return "not held" if lo > threshold or hi < -threshold else "inconclusive"
    if direction == "less":
        lo, hi, threshold = -hi, -lo, -threshold
    if lo > threshold:
        return "held"
    return "not held" if hi < threshold else "inconclusive"


def combine(verdicts: list[str]) -> str:
    """A claim over several conditions: held if all hold, not held if any fails."""
    if not verdicts or "not tested" in verdicts:
        return "not tested"
    if "not held" in verdicts:
        return "not held"
    return "held" if all(v == "held" for v in verdicts) else "inconclusive"


def runner_up(values: dict[str, list[float]], best: str | tuple[str, ...],
              higher: bool = True) -> tuple[str, str]:
    """(claimed, runner-up): the best by mean within `best` and the best by mean of the rest."""
    group = (best,) if isinstance(best, str) else tuple(best)
    unknown = [k for k in group if k not in values]
    if unknown or len(group) == len(values):
        raise ValueError(f"`best` must name some, not all, of {', '.join(values)}; got {group}")
    sign = 1 if higher else -1

    def top(keys):
        return max(keys, key=lambda k: sign * statistics.fmean(values[k]))

    return top(group), top([k for k in values if k not in group])


def rule_text(threshold: float, direction: str, level: float = LEVEL) -> str:
    pct = f"{100 * level:.0f} %"
    if direction == "equivalent":
        return f"held if the {pct} t-interval lies within ±{threshold:g}"
    sign = ">" if direction == "greater" else "<"
    return f"held if the {pct} t-interval lies {sign} {threshold:g}, not held if it lies on " \
           "the other side"


def fmt(x: float, digits: int = 3) -> str:
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    return f"{x:+.{digits}f}"


def effect_text(effect: Effect, digits: int = 3) -> str:
    return f"{fmt(effect.mean, digits)} [{fmt(effect.low, digits)}, {fmt(effect.high, digits)}]" \
           f" ({effect.n} seed{'s' if effect.n > 1 else ''})"


@dataclass(frozen=True)
class Claim:
    id: str
    statement: str
    paper: str
    ours: str
    verdict: str  # one of VERDICTS
    kind: str = "paper"
    note: str = ""
    rule: str = ""
    evidence: list[dict] = field(default_factory=list)  # per condition: seeds, effect, interval
    protocol_verdict: str = ""  # the verdict before the audit rule ("" = same as verdict)

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"unknown verdict {self.verdict!r}; valid: {', '.join(VERDICTS)}")
        if self.kind not in KINDS:
            raise ValueError(f"unknown claim kind {self.kind!r}; valid: {', '.join(KINDS)}")

    @property
    def holds(self) -> bool | None:
        return {"held": True, "not held": False}.get(self.verdict)

    def to_dict(self) -> dict:
        return {**asdict(self), "protocol_verdict": self.protocol_verdict or self.verdict}


def verdict_of(holds: bool | None) -> str:
    return {True: "held", False: "not held", None: "not tested"}[holds]


def evidence(label: str, a, b, threshold: float, direction: str, digits: int = 3) -> dict:
    """One condition of a seeded claim: the paired effect, its interval and its verdict."""
    eff = paired_interval(a, b)
    return {"label": label, "a": [float(x) for x in a],
            "b": None if b is None else [float(x) for x in b],
            "effect": eff.mean,
            "interval": [None if math.isinf(x) else x for x in (eff.low, eff.high)],
            "level": eff.level, "n": eff.n, "threshold": threshold, "direction": direction,
            "verdict": decide(eff, threshold, direction),
            "text": (f"{label}: " if label else "") + effect_text(eff, digits)}


# --- the audit rule ---------------------------------------------------------------------------

def stability(book_verdict: str, audit_verdicts: list[str]) -> float | None:
    """Fraction of fresh seed-sets whose verdict equals the book's (None: no audit)."""
    if not audit_verdicts:
        return None
    return sum(v == book_verdict for v in audit_verdicts) / len(audit_verdicts)


def audited(verdict: str, audit_entry: dict | None) -> tuple[str, str]:
    """(verdict, note) after the audit rule: a held / not held verdict that the fresh seed-sets
    of the last audit did not all reproduce becomes inconclusive."""
    if not audit_entry or verdict not in ("held", "not held"):
        return verdict, ""
    frac = stability(verdict, audit_entry.get("verdicts", []))
    if frac is None or frac >= 1:
        return verdict, ""
    return "inconclusive", f"{verdict} here, but the verdict changed under fresh seeds in the " \
                           f"last audit (same verdict in {frac:.0%} of seed-sets)"


# --- tables -----------------------------------------------------------------------------------

VERDICT_MARK = {"held": "✅ held", "not held": "❌ not held", "inconclusive": "❔ inconclusive",
                "not tested": "➖ not tested"}


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


def score_line(claims: list[dict]) -> str:
    counts = summarize(claims)
    others = {k: sum(c.get("kind", "paper") == k for c in claims) for k in KINDS[1:]}
    return (f"Reproduction score ({sum(counts.values())} paper claims): {counts['held']} held, "
            f"{counts['not held']} not held, {counts['inconclusive']} inconclusive, "
            f"{counts['not tested']} not tested. "
            f"Not counted: {others['identity']} identity check(s), {others['context']} context "
            "claim(s).")


def claims_markdown(claims: list[Claim]) -> str:
    rows = [[c.statement, c.kind, c.paper, c.ours,
             VERDICT_MARK[c.verdict] + (f" — {c.note}" if c.note else ""), c.rule or "–"]
            for c in claims]
    table = markdown_table(["Claim", "Kind", "Paper", "Ours", "Verdict", "Rule"], rows)
    return table + "\n\n" + score_line([c.to_dict() for c in claims])


def summarize(claims: list[dict], kind: str = "paper") -> dict[str, int]:
    """Verdict counts of the claims of one kind (the reproduction score counts `paper`)."""
    counts = dict.fromkeys(VERDICTS, 0)
    for claim in claims:
        if claim.get("kind", "paper") == kind:
            counts[claim["verdict"]] += 1
    return counts
