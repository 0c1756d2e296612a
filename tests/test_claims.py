"""The claim protocol: paired t-intervals, three-valued verdicts, claim kinds, the audit rule,
and the provenance dirty rule."""

import math

import numpy as np
import pytest
from scipy import stats

from lossbook import book, claims, presets, session
from lossbook.claims import Effect, decide, paired_interval


def test_paired_interval_matches_scipy_t():
    a = np.array([0.71, 0.69, 0.74, 0.70, 0.73, 0.72])
    b = np.array([0.66, 0.67, 0.69, 0.68, 0.66, 0.70])
    eff = paired_interval(a, b)
    d = a - b
    low, high = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    assert eff.n == 6 and eff.values == pytest.approx(list(d))
    assert (eff.mean, eff.low, eff.high) == pytest.approx((d.mean(), low, high))
    one = paired_interval([0.5])
    assert one.mean == 0.5 and math.isinf(one.low) and math.isinf(one.high)


def interval(low, high):
    return Effect([], (low + high) / 2, low, high)


@pytest.mark.parametrize("low, high, threshold, direction, verdict", [
    (0.01, 0.05, 0.0, "greater", "held"),
    (-0.05, -0.01, 0.0, "greater", "not held"),
    (-0.01, 0.05, 0.0, "greater", "inconclusive"),
    (0.01, 0.05, 0.02, "greater", "inconclusive"),  # above 0 but not credibly above δ
    (0.00, 0.015, 0.02, "greater", "not held"),       # credibly below the stated minimum effect
    (-0.05, -0.01, 0.0, "less", "held"),
    (0.01, 0.05, 0.0, "less", "not held"),
    (-0.004, 0.003, 0.005, "equivalent", "held"),     # TOST: inside ± margin
    (0.006, 0.02, 0.005, "equivalent", "not held"),   # wholly outside
    (-0.02, -0.006, 0.005, "equivalent", "not held"),
    (-0.004, 0.01, 0.005, "equivalent", "inconclusive"),
])
def test_three_valued_verdicts(low, high, threshold, direction, verdict):
    assert decide(interval(low, high), threshold, direction) == verdict


def test_null_claims_need_a_margin_and_directions_are_checked():
    with pytest.raises(ValueError, match="margin"):
        decide(interval(-1, 1), 0.0, "equivalent")
    with pytest.raises(ValueError, match="valid"):
        decide(interval(-1, 1), 0.0, "bigger")


def test_combine_conditions():
    assert claims.combine(["held", "held"]) == "held"
    assert claims.combine(["held", "inconclusive"]) == "inconclusive"
    assert claims.combine(["inconclusive", "not held"]) == "not held"
    assert claims.combine([]) == "not tested"


def test_best_of_is_decided_against_the_runner_up():
    values = {"ce": [0.70, 0.72, 0.71], "gce": [0.69, 0.73, 0.72], "mae": [0.60, 0.61, 0.59],
              "sumexp": [0.68, 0.69, 0.70]}
    assert claims.runner_up(values, ("ce", "gce")) == ("gce", "sumexp")
    assert claims.runner_up(values, "mae") == ("mae", "gce")
    assert claims.runner_up(values, "mae", higher=False) == ("mae", "sumexp")
    with pytest.raises(ValueError):
        claims.runner_up(values, tuple(values))


def chapter(preset="smoke"):
    return session.Chapter("01_compsum", preset, 0, "cpu", None, {}, 1)


def test_claim_records_store_seeds_effect_interval_rule_and_kind():
    ch = chapter()
    a = [0.75, 0.74, 0.76, 0.75, 0.77]
    b = [0.70, 0.71, 0.70, 0.72, 0.71]
    c = ch.claim_effect("x", "A beats B", paper="yes", a={"task 1": a, "task 2": a},
                        b={"task 1": b, "task 2": a}, threshold=0.0)
    record = c.to_dict()
    assert record["verdict"] == "inconclusive"  # task 2 has a zero effect
    assert record["kind"] == "paper" and "95 %" in record["rule"]
    first = record["evidence"][0]
    assert first["a"] == a and first["b"] == b and first["n"] == 5
    assert first["verdict"] == "held" and first["interval"][0] > 0
    assert "task 1: +0.046" in record["ours"]
    best = ch.claim_best("y", "A is best", paper="yes", values={"A": a, "B": b}, best="A")
    assert best.verdict == "held" and best.evidence[0]["label"] == "A vs B"
    worse = ch.claim_best("z", "B is best", paper="yes", values={"A": a, "B": b}, best="B")
    assert worse.verdict == "not held"
    lower = ch.claim_best("w", "B has lower error", paper="", values={"A": a, "B": b}, best="B",
                          higher=False)
    assert lower.verdict == "held"
    ident = ch.claim("i", "formula", paper="Eq. 1", ours="1e-16", holds=True, kind="identity")
    assert ident.verdict == "held" and ident.kind == "identity"
    with pytest.raises(ValueError, match="kind"):
        ch.claim("k", "s", paper="", ours="", holds=True, kind="empirical")
    mixed = ch.claim_effect("m", "two tolerances", paper="", a={"cos": [0.995, 0.996, 0.997],
                                                                 "ratio": [0.01, -0.01, 0.0]},
                            threshold={"cos": 0.99, "ratio": 0.05},
                            direction={"cos": "greater", "ratio": "equivalent"})
    assert mixed.verdict == "held" and "cos: held if" in mixed.rule
    assert ch.claim_effect("e", "not run", paper="", a={}).verdict == "not tested"
    assert ch.claim_effect("e", "not run", paper="", a=[]).verdict == "not tested"
    single = ch.claim_effect("s", "one seed", paper="", a=[0.1], b=[0.0])
    assert single.verdict == "inconclusive"  # one seed decides nothing



def test_a_failed_precondition_leaves_the_claim_not_tested_with_its_unjudged_effect():
    ch = chapter()
    a, b = [0.75, 0.74, 0.76, 0.75, 0.77], [0.70, 0.71, 0.70, 0.72, 0.71]
    met = ch.claim_effect("p", "A beats B", paper="", a=a, b=b, requires=(True, "flat"))
    assert met.verdict == "held"
    failed = ch.claim_effect("q", "A beats B", paper="", ours="Δacc", a=a, b=b,
                             requires=(False, "training had not plateaued"))
    assert failed.verdict == "not tested" and not failed.evidence
    assert failed.ours.startswith("Δacc (not judged: training had not plateaued; unjudged "
                                  "effect +0.046")
    best = ch.claim_best("r", "A is best", paper="", values={"A": a, "B": b}, best="A",
                         requires=(False, "floor"))
    assert best.verdict == "not tested"

def test_score_counts_only_paper_claims():
    recs = [{"verdict": "held", "kind": "paper"}, {"verdict": "held", "kind": "identity"},
            {"verdict": "inconclusive", "kind": "paper"}, {"verdict": "held", "kind": "context"},
            {"verdict": "not held"}]  # records without a kind are paper claims
    assert claims.summarize(recs) == {"held": 1, "not held": 1, "inconclusive": 1,
                                      "not tested": 0}
    assert claims.summarize(recs, "identity")["held"] == 1
    assert "1 identity check(s), 1 context" in claims.score_line(recs)


def test_audit_stability_and_rule():
    assert claims.stability("held", ["held", "held", "inconclusive", "held"]) == 0.75
    assert claims.stability("held", []) is None
    assert claims.audited("held", {"verdicts": ["held", "held"]}) == ("held", "")
    verdict, note = claims.audited("held", {"verdicts": ["held", "not held"]})
    assert verdict == "inconclusive" and "50%" in note
    assert claims.audited("not held", {"verdicts": ["inconclusive"]})[0] == "inconclusive"
    assert claims.audited("inconclusive", {"verdicts": ["held"]})[0] == "inconclusive"
    assert claims.audited("held", None) == ("held", "")


def test_book_claims_follow_the_last_audit(tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSBOOK_ROOT", str(tmp_path))
    (tmp_path / "book" / "audit").mkdir(parents=True)
    book.audit_path("01_compsum").write_text(
        '{"seed_sets": [1000, 2000], "claims": {"x": {"book": "held", '
        '"verdicts": ["held", "inconclusive"], "stability": 0.5}}}')
    ch = chapter("book")
    a, b = [1.0, 1.1, 1.2, 1.0, 1.1], [0.0, 0.1, 0.0, 0.1, 0.0]
    c = ch.claim_effect("x", "A beats B", paper="", a=a, b=b)
    assert c.verdict == "inconclusive" and c.protocol_verdict == "held"
    assert "changed under fresh seeds" in c.note
    assert ch.claim_effect("y", "stable", paper="", a=a, b=b).verdict == "held"
    monkeypatch.setenv("LOSSBOOK_AUDIT", "1")  # an audit run reports the protocol's verdicts
    assert ch.claim_effect("x", "A beats B", paper="", a=a, b=b).verdict == "held"
    record = {"claims": [c.to_dict() for c in ch.claims]}
    monkeypatch.delenv("LOSSBOOK_AUDIT")
    shown = {c["id"]: c for c in book.record_claims("01_compsum", record)}
    assert shown["x"]["verdict"] == "inconclusive" and shown["x"]["stability"] == 0.5
    assert shown["y"]["verdict"] == "held" and shown["y"]["stability"] is None


def test_dirty_state_ignores_the_book_and_names_paths():
    porcelain = (" M book/claims/01_compsum.json\n M book/status.md\n"
                 " M src/lossbook/claims.py\nR  old.py -> tests/new.py\n")
    assert session.dirty_paths(porcelain) == ["src/lossbook/claims.py", "tests/new.py"]
    assert session.dirty_paths(" M book/01_compsum.ipynb\n") == []


def test_audit_validates_before_running(monkeypatch):
    with pytest.raises(Exception, match="valid chapters"):
        book.audit("99_nothing", 2)
    with pytest.raises(Exception, match="positive"):
        book.audit("01_compsum", 0, "smoke")
    with pytest.raises(Exception, match="valid presets"):
        book.audit("01_compsum", 2, "huge")


# Seed-like counts that decide no claim (the chapters say so): attack restarts, the seeds of a
# hyperparameter search on held-out data, and of sweeps drawn as figures or context only.
NOT_CLAIM_SEEDS = {"01_compsum": {"adv_eval_restarts"}, "02_dhkd": {"tune_seeds", "scale_seeds"},
                   "04_am_ssl_sv": {"sweep_seeds"}}


@pytest.mark.parametrize("chapter", list(presets.CHAPTERS))
def test_book_presets_run_enough_seeds(chapter):
    cfg = presets.resolve(chapter, "book")
    counts = {k: v for k, v in vars(cfg).items() if k.endswith(("seeds", "restarts"))}
    exempt = NOT_CLAIM_SEEDS.get(chapter, set())
    assert exempt <= counts.keys(), f"stale exemptions: {exempt - counts.keys()}"
    judged = {k: v for k, v in counts.items() if k not in exempt}
    assert judged and all(v >= claims.MIN_SEEDS for v in judged.values()), judged
