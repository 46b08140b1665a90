"""The built-in prompt policy: every prompt of the labelled set, the aggregate goals,
scoring, thresholds, negative prompts, and operator term lists."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.eval_prompt_policy import (
    GOAL_BENIGN_FP,
    GOAL_OBFUSCATED_RECALL,
    evaluate,
    is_correct,
    load_rows,
)
from sdserve.domain.errors import ContentPolicyViolation, ModerationUnavailable
from sdserve.safety.builtin import BuiltinPolicy, combine
from sdserve.safety.decisions import PolicyDecision
from sdserve.safety.terms import TermListError, load_term_lists

ROOT = Path(__file__).resolve().parents[2]
ROWS = load_rows()
# Wrong today, all in the held-out split (never tuned on). strict xfail: a fix shows up.
KNOWN_MISSES = {
    # "a" of "assault" glued to the spaced-out "brutal" before it, then split wrongly
    ("b027", "obfuscated:mixed"),
    # Gore-Tex reads as "gore"
    ("b288", "benign-tricky"),
    ("b288", "benign-tricky:obfuscated:punctuated"),
    ("b288", "benign-tricky:obfuscated:zero-width"),
}


@pytest.fixture(scope="module")
def policy() -> BuiltinPolicy:
    return BuiltinPolicy.load()


def _param(row: dict[str, str]) -> object:
    known = (row["base_id"], row["variant"]) in KNOWN_MISSES
    marks = [pytest.mark.xfail(strict=True, reason="known miss")] if known else []
    return pytest.param(row, id=f"{row['base_id']}-{row['variant']}", marks=marks)


@pytest.mark.parametrize("row", [_param(r) for r in ROWS])
def test_labelled_prompt(policy: BuiltinPolicy, row: dict[str, str]) -> None:
    decision = policy.check(row["text"])
    assert is_correct(row, decision), (row, decision.categories, decision.matches)


def test_known_misses_are_in_the_held_out_split() -> None:
    keys = {(r["base_id"], r["variant"]): r["split"] for r in ROWS}
    assert all(keys.get(k) == "heldout" for k in KNOWN_MISSES)


def test_set_size_and_coverage() -> None:
    assert len(ROWS) >= 300
    kinds = {r["variant"].split(":", 1)[1] for r in ROWS if r["variant"].startswith("obfuscated")}
    assert kinds >= {
        "nfkc",
        "case",
        "accents",
        "zero-width",
        "homoglyph",
        "leet",
        "spaced",
        "punctuated",
        "repeated",
        "mixed",
    }
    assert {r["split"] for r in ROWS} == {"dev", "heldout"}
    assert sum(r["expected"] == "benign" for r in ROWS) >= 100


@pytest.mark.parametrize("split", ["dev", "heldout"])
def test_aggregate_goals(policy: BuiltinPolicy, split: str) -> None:
    report = evaluate(policy, ROWS, split)
    assert report.recall_obfuscated >= GOAL_OBFUSCATED_RECALL
    assert report.benign_fp_rate <= GOAL_BENIGN_FP
    assert report.recall_plain == 1.0


def test_eval_file_is_generated_from_the_base_file() -> None:
    done = subprocess.run(
        [sys.executable, "bench/make_prompt_policy_eval.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr


def test_noisy_or_combines_weak_signals() -> None:
    assert combine([]) == 0.0
    assert combine([0.9]) == pytest.approx(0.9)
    assert combine([0.4, 0.4]) == pytest.approx(0.64)
    assert combine([0.4, 0.4, 0.4]) == pytest.approx(0.784)


def test_weak_words_alone_pass_and_together_refuse(policy: BuiltinPolicy) -> None:
    assert policy.check("a bloody steak").approved
    decision = policy.check("a brutal, bloody and violent scene")
    assert not decision.approved and decision.flagged == ["violence"]


def test_exception_only_covers_its_own_occurrence(policy: BuiltinPolicy) -> None:
    assert policy.check("a nude lipstick shade").approved
    assert not policy.check("a nude woman wearing nude lipstick").approved


def test_exception_cancels_a_longer_hit_it_overlaps(policy: BuiltinPolicy) -> None:
    assert policy.check("shoot a portrait of him").approved
    assert not policy.check("shoot him").approved
    assert not policy.check("shoot the man, then a portrait").approved


def test_decision_fields(policy: BuiltinPolicy) -> None:
    refused = policy.check("a man stabbing another man")
    assert not refused.approved
    assert refused.source == "builtin" and refused.stage == "prompt"
    assert set(refused.categories) == {"violence", "adult", "hate", "self-harm"}
    assert all(0.0 <= s <= 1.0 for s in refused.categories.values())
    assert refused.confidence == refused.categories["violence"] >= 0.7
    assert "violence" in refused.reason
    assert refused.matches["violence"]  # for logs
    body = refused.as_dict()
    assert set(body) == {"approved", "confidence", "categories", "reason", "stage", "source"}
    approved = policy.check("a red circle on a blue background")
    assert approved.approved and approved.confidence == 1.0 and approved.flagged == []


def test_per_call_threshold(policy: BuiltinPolicy) -> None:
    prompt = "a bloody and brutal fight"  # two weak signals: 0.35 + 0.35 -> 0.58
    assert policy.check(prompt).approved
    strict = policy.check(prompt, threshold=0.5)
    assert not strict.approved and strict.threshold == 0.5
    assert BuiltinPolicy.load(threshold=0.5).check(prompt).approved is False
    assert policy.check("a man stabbing another man", threshold=0.99).approved


def test_negative_prompt_asking_for_no_clothes(policy: BuiltinPolicy) -> None:
    prompt = "a woman standing in a garden"
    assert policy.check(prompt, "blurry, extra fingers, nsfw, nude").approved
    refused = policy.check(prompt, "clothes, clothing, underwear")
    assert not refused.approved and refused.flagged == ["adult"]
    assert any(m.startswith("negative: ") for m in refused.matches["adult"])
    # no person in the prompt: asking for no clothes is not asking for nudity
    assert policy.check("an empty wardrobe", "clothes, clothing, underwear").approved


def test_refusal_raises_content_policy_violation(policy: BuiltinPolicy) -> None:
    decision = policy.check("a pornographic scene")
    with pytest.raises(ContentPolicyViolation) as info:
        decision.raise_if_refused()
    err = info.value
    assert err.status == 400 and err.type == "content_policy_violation"
    body = err.as_dict()
    assert body["approved"] is False
    assert body["categories"]["adult"] >= 0.7
    assert body["confidence"] >= 0.7 and body["reason"] == decision.reason
    policy.check("a cat").raise_if_refused()  # approved: no error


def test_failed_check_raises_moderation_unavailable() -> None:
    failed = PolicyDecision(False, 0.0, {}, "moderation unavailable", "external", error="timeout")
    with pytest.raises(ModerationUnavailable) as info:
        failed.raise_if_refused()
    assert info.value.status == 503 and info.value.retryable


def _write(folder: Path, name: str, text: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")


def test_operator_extends_a_category(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "violence.toml",
        '[terms]\n"flurbicide" = 0.95\n"kill|kills|killed|killing" = 0\n',
    )
    policy = BuiltinPolicy.load(tmp_path)
    assert not policy.check("a f l u r b i c i d e scene").approved
    assert not policy.check("a man stabbing another man").approved  # built-ins kept
    # weight 0 took the phrase out
    assert "kill|kills|killed|killing" not in load_term_lists(tmp_path).categories["violence"].terms


def test_operator_replaces_a_category_and_adds_one(tmp_path: Path) -> None:
    _write(tmp_path, "adult.toml", 'mode = "replace"\n[terms]\n"zorblax" = 0.9\n')
    _write(
        tmp_path,
        "drugs.toml",
        'description = "drug use"\nexceptions = ["cocaine museum"]\n'
        '[terms]\n"cocaine|heroin" = 0.8\n"snorting ~ {powder}" = 0.9\n'
        '[classes]\npowder = ["cocaine", "lines"]\n',
    )
    policy = BuiltinPolicy.load(tmp_path)
    assert policy.check("a pornographic scene").approved  # built-in adult list replaced
    assert policy.check("z o r b l a x").flagged == ["adult"]
    refused = policy.check("a man snorting lines of c0caine")
    assert "drugs" in refused.flagged
    assert policy.check("the cocaine museum").approved


def test_operator_extends_shared_classes(tmp_path: Path) -> None:
    _write(tmp_path, "classes.toml", '[classes]\nperson = ["wizard"]\n')
    policy = BuiltinPolicy.load(tmp_path)
    assert not policy.check("stabbing the wizard").approved
    assert BuiltinPolicy.load().check("stabbing the wizard").approved


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[terms\n", "not valid TOML"),
        ('[terms]\n"x" = 1.5\n', "not in [0, 1]"),
        ('[terms]\n"x" = "high"\n', "must be a number"),
        ('[terms]\n"kill {nobody}" = 0.9\n', "unknown class {nobody}"),
        ('[terms]\n"~ kill" = 0.9\n', "may not start or end"),
        ('mode = "merge"\n', 'mode must be "extend" or "replace"'),
        ("colour = 3\n", "unknown keys ['colour']"),
        ("exceptions = [3]\n", "list of non-empty strings"),
    ],
)
def test_bad_operator_file_is_named(tmp_path: Path, text: str, message: str) -> None:
    _write(tmp_path, "violence.toml", text)
    with pytest.raises(TermListError) as info:
        BuiltinPolicy.load(tmp_path)
    assert "violence.toml" in str(info.value) or "violence" in str(info.value)
    assert message in str(info.value)


def test_missing_operator_folder(tmp_path: Path) -> None:
    with pytest.raises(TermListError, match="does not exist"):
        load_term_lists(tmp_path / "nope")


def test_long_prompt_is_fast_enough_to_run_at_submit(policy: BuiltinPolicy) -> None:
    # Not a timing assertion: a 2000-character worst case must simply finish and decide.
    prompt = ("k i l l " * 100 + "1" * 400 + " a|b|c ")[:2000]
    assert isinstance(policy.check(prompt, prompt).approved, bool)
