"""Fit the logistic model that combines check signals: L2-regularised, Newton's method, pure Python.

Small on purpose: a dozen signals and a few hundred to a few thousand labelled answers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from worker.policy.answer_checks.score import Coefficients, Signals, sigmoid


def _solve(a: list[list[float]], b: list[float]) -> list[float]:
    """Gaussian elimination with partial pivoting (the system is small and positive definite)."""
    n = len(b)
    m = [[*row, b[i]] for i, row in enumerate(a)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        m[col], m[pivot] = m[pivot], m[col]
        p = m[col][col]
        if abs(p) < 1e-12:
            continue
        for r in range(n):
            if r != col and m[r][col]:
                f = m[r][col] / p
                for c in range(col, n + 1):
                    m[r][c] -= f * m[col][c]
    return [m[i][n] / m[i][i] if abs(m[i][i]) > 1e-12 else 0.0 for i in range(n)]


def fit_logistic(
    rows: Sequence[Signals],
    labels: Sequence[bool],
    names: Sequence[str],
    l2: float = 1.0,
    iterations: int = 25,
) -> Coefficients:
    """Weights for ``names`` predicting ``labels`` (True = the answer fell short). Intercept unpenalised."""
    if len(rows) != len(labels) or not rows:
        raise ValueError("signals and labels must be non-empty and of equal length")
    xs = [[1.0] + [r.get(n, 0.0) for n in names] for r in rows]
    ys = [1.0 if y else 0.0 for y in labels]
    k = len(names) + 1
    w = [0.0] * k
    rate = sum(ys) / len(ys)
    if 0 < rate < 1:
        w[0] = math.log(rate / (1 - rate))
    for _ in range(iterations):
        grad = [0.0] * k
        hess = [[0.0] * k for _ in range(k)]
        for x, y in zip(xs, ys, strict=True):
            p = sigmoid(sum(wi * xi for wi, xi in zip(w, x, strict=True)))
            d = p - y
            s = p * (1 - p)
            for i in range(k):
                if x[i]:
                    grad[i] += d * x[i]
                    xi = s * x[i]
                    row = hess[i]
                    for j in range(k):
                        if x[j]:
                            row[j] += xi * x[j]
        for i in range(1, k):
            grad[i] += l2 * w[i]
            hess[i][i] += l2
        hess[0][0] += 1e-6
        step = _solve(hess, grad)
        w = [wi - si for wi, si in zip(w, step, strict=True)]
        if max(abs(s) for s in step) < 1e-7:
            break
    return Coefficients(intercept=w[0], weights={n: w[i + 1] for i, n in enumerate(names)})
