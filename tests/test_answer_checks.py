"""Answer checks as scores: each signal fires on the answer that has it and not on one that lacks it."""

from __future__ import annotations

import time

from jobs.contract import OutputFormat
from worker.policy.answer_checks import documents, maths, score_answer

PROBLEM = "Tom has 3 boxes with 12 apples each. He eats 5 apples. How many apples are left?"
GOOD = "Tom has 3 * 12 = 36 apples. After eating 5 he has 36 - 5 = 31 apples. The answer is 31."


def test_correct_arithmetic_scores_low_and_has_no_reasons() -> None:
    sig, reasons = maths.signals(PROBLEM, GOOD)
    assert sig["arith_wrong"] == 0 and sig["unused_share"] == 0 and sig["no_final"] == 0
    assert reasons == []
    assert score_answer("reason", PROBLEM, GOOD).score < 0.3


def test_wrong_arithmetic_is_recomputed() -> None:
    sig, reasons = maths.signals(PROBLEM, GOOD.replace("= 36 apples", "= 38 apples"))
    assert sig["arith_wrong"] == 1
    assert any("re-compute" in r for r in reasons)
    assert maths.arithmetic("0.5 * 30 = 15 and 4.00 / 15 = 0.27 and 22 + 4 x 12 = 22 + 48 = 70")[1] == 0


def test_missing_final_answer_and_truncation() -> None:
    sig, _ = maths.signals(PROBLEM, "Tom has 3 * 12 = 36 apples. Then he eats some of the")
    assert sig["truncated"] == 1 and sig["no_final"] == 1
    assert maths.truncated("so 15 + 25 = <<15+2")
    assert not maths.truncated("Answer: 31")


def test_final_answer_shape() -> None:
    sig, reasons = maths.signals(PROBLEM, "3 * 12 = 36, 36 - 5 = 31, 31 / 2 = 15.5. The answer is 15.5.")
    assert sig["final_fraction"] == 1 and any("whole number" in r for r in reasons)
    sig, _ = maths.signals(PROBLEM, "3 * 12 = 36 and 5 - 36 = -31. The answer is -31.")
    assert sig["final_negative"] == 1


def test_problem_numbers_never_used() -> None:
    sig, reasons = maths.signals(PROBLEM, "Tom has 3 * 12 = 36 apples. The answer is 36.")
    assert sig["unused_share"] == 1 / 3
    assert any("never used (5)" in r for r in reasons)


def test_hedging() -> None:
    sig, _ = maths.signals(
        PROBLEM, GOOD.replace("The answer", "Assuming he ate them all, approximately the answer")
    )
    assert sig["hedges"] == 2


def test_hard_checks_score_one() -> None:
    s = score_answer("reason", PROBLEM, "")
    assert s.score == 1.0 and "failed check: empty" in s.reasons
    s = score_answer("extract", "x", "not json", output=OutputFormat(type="json"))
    assert s.score == 1.0 and "failed check: json" in s.reasons
    assert score_answer("reason", PROBLEM, GOOD, stop_reason="max_tokens").score == 1.0
    assert score_answer("reason", PROBLEM, "I'm sorry, I can't help with that.").score == 1.0


def test_extraction_grounding_and_required_fields() -> None:
    docs = ["Invoice 1042 from Acme Ltd, total 99.50 EUR"]
    sig, _ = documents.extraction({"vendor": "Acme Ltd", "total": 99.5}, docs, ["vendor", "total"])
    assert sig == {"ungrounded_share": 0.0, "missing_required": 0.0}
    sig, _ = documents.extraction({"vendor": "Globex", "total": None}, docs, ["vendor", "total"])
    assert sig["ungrounded_share"] == 1.0 and sig["missing_required"] == 0.5
    fmt = OutputFormat(type="json", schema={"type": "object", "required": ["vendor"]})
    good = score_answer("extract", "x", '{"vendor": "Acme Ltd"}', documents=docs, output=fmt)
    bad = score_answer("extract", "x", '{"vendor": "Globex"}', documents=docs, output=fmt)
    assert bad.score > 0.5 > good.score


def test_classification_labels() -> None:
    allowed = ["spam", "ham"]
    assert documents.classification("spam", None, allowed)[0] == {"label_outside": 0.0, "several_labels": 0.0}
    assert documents.classification("eggs", None, allowed)[0]["label_outside"] == 1.0
    assert documents.classification("spam or ham", None, allowed)[0]["several_labels"] == 1.0
    fmt = OutputFormat(type="json", schema={"type": "object", "properties": {"label": {"enum": allowed}}})
    assert score_answer("classify", "x", '{"label": "eggs"}', output=fmt).score > 0.5
    assert score_answer("classify", "x", '{"label": "ham"}', output=fmt).score < 0.5


def test_qa_quotes_must_be_in_the_document() -> None:
    docs = ["The warranty lasts for two years from the date of purchase."]
    ok = 'It says "lasts for two years from the date of purchase".'
    made_up = 'It says "lasts for five years from delivery onwards".'
    assert documents.quotes(ok, docs)[0]["unfound_quote_share"] == 0.0
    assert documents.quotes(made_up, docs)[0]["unfound_quote_share"] == 1.0
    assert (
        score_answer("qa", "x", made_up, documents=docs).score
        > score_answer("qa", "x", ok, documents=docs).score
    )


def test_thousands_of_answers_per_second() -> None:
    answers = [GOOD.replace("31", str(n)) for n in range(2000)]
    t0 = time.perf_counter()
    for a in answers:
        score_answer("reason", PROBLEM, a)
    assert len(answers) / (time.perf_counter() - t0) > 1000
