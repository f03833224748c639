"""Signals of a worked maths or reasoning answer that any model's answer has.

Read from the text alone: the arithmetic it states, re-computed; whether it ends in a final answer and
what shape that number has; which of the problem's numbers it never uses; hedging. Calculator
annotations such as ``<<2*3=6>>`` are dropped first: they repeat the text, and only some models write
them.
"""

from __future__ import annotations

import ast
import itertools
import math
import operator
import re
from collections.abc import Callable

from worker.policy.answer_checks.score import Signals

_ANNOTATION = re.compile(r"<<[^<>]*>>")
_NUM = r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+"
_NUMBER = re.compile(rf"(?<![\w.])(?:{_NUM})")
# "expr = result": an expression of numbers and operators, then '=' and a number (units may follow).
_OP = "[+\\-*/x\u00d7\u00f7\u00b7\u2212\u2013]"  # also the times, divide, dot, minus signs, en dash
_TERM = rf"\(?\s*\$?(?:{_NUM})%?\s*\)?"
_EXPR = rf"\(?\s*{_TERM}(?:\s*{_OP}\s*\(?\s*{_TERM}\s*\)?)*"
# A chain "a op b = c op d = e": every link is re-computed against the next.
_EQUATION = re.compile(rf"{_EXPR}(?:\s*=\s*{_EXPR})+")
_FINAL_MARKER = re.compile(
    r"(?:####|answer\s*(?:is|:|=)|\\boxed\{|final answer|therefore|thus|so,? the|in total|altogether)",
    re.IGNORECASE,
)
_HEDGE = re.compile(
    r"\b(?:approximately|approx\.?|about|roughly|around|assum\w*|not sure|unclear|it seems|might|"
    r"probably|perhaps|cannot be determined|not possible|doesn't make sense|does not make sense|"
    r"impossible|round(?:ed|ing)?(?: up| down)?|closest|estimate\w*|wait)\b|≈|~",
    re.IGNORECASE,
)
_WORD_NUMBERS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20, "thirty": 30, "forty": 40,
    "fifty": 50, "hundred": 100, "half": 0.5, "twice": 2, "double": 2, "triple": 3, "quarter": 0.25,
    "dozen": 12,
}  # fmt: skip
_WORDS = re.compile(r"\b(" + "|".join(_WORD_NUMBERS) + r")\b", re.IGNORECASE)
# Endings of a finished answer: a sentence's end, a closed bracket or markup, or a short line that is
# only the final answer ("Answer: 18", "**18**").
_FINISHED = re.compile(r"[.!?)\]}*\"'`]\s*$")
_ANSWER_LINE = re.compile(rf"^\W*(?:[A-Za-z ]{{0,20}}[:=]|####)?\s*\$?(?:{_NUM})\W*[A-Za-z ]{{0,16}}$")
_OPERATOR_CHARS = str.maketrans("x\u00d7\u00f7\u00b7\u2212\u2013", "**/*--")
_BINOPS: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}

SIGNALS: tuple[str, ...] = (
    "arith_wrong",
    "arith_wrong_share",
    "no_equations",
    "no_final",
    "final_fraction",
    "final_negative",
    "final_in_problem",
    "final_not_derived",
    "unused_share",
    "hedges",
    "truncated",
    "short",
    "final_not_last_result",
    "problem_numbers",
    "final_magnitude",
)


def clean(text: str) -> str:
    return _ANNOTATION.sub("", text)


def _value(token: str) -> float:
    return float(token.replace(",", ""))


def _numbers(text: str) -> list[float]:
    out: list[float] = []
    for m in _NUMBER.finditer(text):
        try:
            out.append(_value(m.group()))
        except ValueError:
            continue
    return out


def _evaluate(lhs: str) -> float | None:
    expr = lhs.replace("$", "").replace(",", "")
    expr = re.sub(r"(\d(?:\.\d+)?)%", r"(\1/100)", expr)
    expr = expr.translate(_OPERATOR_CHARS)
    if not re.fullmatch(r"[\d.+\-*/()\s]+", expr) or "**" in expr:
        return None
    try:
        return _arith(ast.parse(expr.strip(), mode="eval").body)
    except (SyntaxError, ZeroDivisionError, ValueError, OverflowError, RecursionError):
        return None


def _arith(node: ast.expr) -> float | None:
    """Value of a tree of numbers and + - * /; None for anything else."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _arith(node.operand)
        return None if inner is None else -inner
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        a, b = _arith(node.left), _arith(node.right)
        if a is None or b is None:
            return None
        return _BINOPS[type(node.op)](a, b)
    return None


def truncated(text: str) -> bool:
    """The answer stops before it is finished: mid-sentence, mid-markup or after a colon."""
    body = text.rstrip()
    if not body:
        return False
    if body.count("<<") > body.count(">>") or body.count("(") > body.count(")"):
        return True
    if _FINISHED.search(body):
        return False
    last = body.rsplit("\n", 1)[-1]
    return not _ANSWER_LINE.match(last)


def _agrees(computed: float, stated: str) -> bool:
    """The stated result equals the computation, allowing the rounding its written precision implies."""
    claimed = _value(stated)
    decimals = len(stated.split(".", 1)[1]) if "." in stated else 0
    if abs(computed - claimed) <= 0.5 * 10**-decimals + 1e-9:
        return True
    return abs(computed - claimed) <= 0.01 * max(abs(computed), abs(claimed))


def arithmetic(text: str) -> tuple[int, int, float | None]:
    """(stated equations, those whose result is wrong, the last stated result)."""
    total = wrong = 0
    last: float | None = None
    for m in _EQUATION.finditer(text):
        links = [part.strip().rstrip("%").strip() for part in m.group().split("=")]
        values = [_evaluate(part) for part in links]
        for (_, va), (b, vb) in itertools.pairwise(zip(links, values, strict=True)):
            if va is None or vb is None:
                continue
            total += 1
            plain = _NUMBER.fullmatch(b.lstrip("$").strip())
            ok = _agrees(va, plain.group()) if plain else math.isclose(va, vb, rel_tol=0.01)
            if not ok:
                wrong += 1
            last = vb
    return total, wrong, last


def final_answer(text: str) -> str | None:
    """The number the answer ends on: after the last final-answer marker, else in the last sentence."""
    markers = list(_FINAL_MARKER.finditer(text))
    if markers:
        tail = text[markers[-1].end() :]
        nums = _NUMBER.findall(tail)
        if nums:
            picked: str = nums[0] if markers[-1].group().startswith(("####", "\\boxed")) else nums[-1]
            return picked
    stripped = text.strip()
    sentences = re.split(r"(?<=[.!?])\s+|\n+", stripped)
    last = next((s for s in reversed(sentences) if s.strip()), "")
    nums = _NUMBER.findall(last)
    return str(nums[-1]) if nums else None


def stated_final(text: str) -> float | None:
    """The final number when the answer marks one ("The answer is", "####", "Therefore", ...), else
    None: an unmarked last number may be an intermediate step, too weak to decide agreement on."""
    text = clean(text)
    if not _FINAL_MARKER.search(text):
        return None
    final = final_answer(text)
    if final is None:
        return None
    try:
        return _value(final)
    except ValueError:
        return None


def signals(prompt: str, answer: str) -> tuple[Signals, list[str]]:
    text = clean(answer)
    out: Signals = dict.fromkeys(SIGNALS, 0.0)
    reasons: list[str] = []
    total, wrong, last_result = arithmetic(text)
    if wrong:
        out["arith_wrong"] = min(wrong, 3)
        out["arith_wrong_share"] = wrong / total
        reasons.append(f"{wrong} of {total} stated calculations re-compute to another result")
    if total == 0:
        out["no_equations"] = 1.0
    final = final_answer(text)
    if final is None:
        out["no_final"] = 1.0
        reasons.append("no final numeric answer")
    else:
        value = _value(final)
        if not math.isclose(value, round(value)):
            out["final_fraction"] = 1.0
            reasons.append(f"final answer {final} is not a whole number")
        if value < 0:
            out["final_negative"] = 1.0
            reasons.append(f"final answer {final} is negative")
        problem_values = set(_numbers(prompt))
        if value in problem_values and len(problem_values) > 1:
            out["final_in_problem"] = 1.0
            reasons.append(f"final answer {final} is one of the problem's own numbers")
        if last_result is not None and not math.isclose(value, last_result, rel_tol=0.01):
            out["final_not_last_result"] = 1.0
            reasons.append(f"final answer {final} differs from the last calculation's result")
        out["final_magnitude"] = min(math.log10(abs(value) + 1.0), 8.0) / 4.0
        body = text[: text.rfind(final)] if final in text else text
        if value not in set(_numbers(body)) and total > 0:
            out["final_not_derived"] = 1.0
            reasons.append(f"final answer {final} appears in no earlier step")
    given = {v for v in _numbers(prompt)}
    given |= {float(_WORD_NUMBERS[w.lower()]) for w in _WORDS.findall(prompt)} - {1.0}
    out["problem_numbers"] = min(len(given), 12) / 6.0
    if given:
        used = set(_numbers(text)) | {float(_WORD_NUMBERS[w.lower()]) for w in _WORDS.findall(text)}
        # A percentage may be used as a fraction (20% -> 0.2) and a number as its half or double.
        used |= {u * 100 for u in used} | {u / 100 for u in used}
        unused = [g for g in given if g not in used]
        if unused:
            out["unused_share"] = len(unused) / len(given)
            shown = ", ".join(f"{g:g}" for g in sorted(unused)[:4])
            reasons.append(f"{len(unused)} of {len(given)} numbers of the problem never used ({shown})")
    hedges = len(_HEDGE.findall(text))
    if hedges:
        out["hedges"] = min(hedges, 3)
        reasons.append(f"{hedges} hedging word(s)")
    if truncated(text):
        out["truncated"] = 1.0
        reasons.append("answer stops mid-sentence")
    if len(text.strip()) < 40:
        out["short"] = 1.0
        reasons.append("answer is very short")
    return out, reasons
