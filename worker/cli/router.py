"""``routeq router ...``: train, evaluate, calibrate and run the learned router; export shadow labels.

``worker/cli/main.py`` calls :func:`add_router_commands` with its argparse subparsers. Every
leaf sets ``func(args) -> int`` (the process exit code).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
from pathlib import Path
from typing import Any, TextIO

from worker.policy.scorer import ModelFileError, Scorer
from worker.routerlab import evaluate


def add_router_commands(subparsers: Any) -> None:
    router = subparsers.add_parser("router", help="the learned complexity router")
    sub = router.add_subparsers(dest="router_command", required=True)

    p = sub.add_parser("train", help="train a router model from a CSV of labelled prompts")
    p.add_argument("--data", type=Path, required=True, help="CSV: domain,prompt,weak_correct,strong_correct")
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="model JSON to write (the shipped model is replaced only when named here)",
    )
    p.add_argument("--no-cv", action="store_true", help="skip leave-domain-out figures and thresholds")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="APGR, CPT and cost saved: learned router vs prompt length vs random")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--cv", action="store_true", help="leave-domain-out: retrain per held-out domain")
    p.add_argument("--price-ratio", type=float, default=evaluate.DEFAULT_PRICE_RATIO)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("calibrate", help="score thresholds for haiku/sonnet/opus")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--model", type=Path, default=None)
    p.add_argument(
        "--target-quality", type=float, default=0.95, help="expected fraction of always-opus quality"
    )
    p.add_argument(
        "--top-share",
        type=float,
        default=None,
        help="fix the share sent to opus; sonnet's band then grows until --target-quality is met",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("score", help='score JSONL {"prompt": ...} lines from stdin')
    p.add_argument("--model", type=Path, default=None)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("export-labels", help="write shadow-run labels as a training CSV")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--redis-url", default=None, help="default: the settings' redis_url")
    p.set_defaults(func=cmd_export_labels)


def _err(msg: str) -> None:
    print(f"routeq router: {msg}", file=sys.stderr)


def _load(model: Path | None) -> Scorer | None:
    try:
        return Scorer.load(model)
    except (OSError, ValueError, ModelFileError) as e:
        _err(f"cannot load router model {model or '(shipped)'}: {e}")
        return None


def cmd_train(args: argparse.Namespace) -> int:
    from worker.routerlab import train

    out: Path = args.out
    try:
        model = train.train(args.data, out, cv=not args.no_cv)
    except (OSError, ValueError) as e:
        _err(str(e))
        return 1
    meta = model["metadata"]
    print(json.dumps({"out": str(out), "cv": meta.get("cv"), "thresholds": meta.get("suggested_thresholds")}))
    return 0


def _format_table(results: dict[str, evaluate.Metrics], price_ratio: float) -> str:
    lines = [
        f"{'router':<14} {'APGR':>6} {'CPT(50%)':>9} {'CPT(80%)':>9} {'saved@95%':>10}",
    ]
    for name, m in results.items():
        lines.append(f"{name:<14} {m.apgr:>6.3f} {m.cpt50:>9.1%} {m.cpt80:>9.1%} {m.cost_saved_at_95:>10.1%}")
    lines.append(
        f"(cost saved vs always-top-tier at >=95% of its quality, price ratio top/cheap = {price_ratio:g})"
    )
    return "\n".join(lines)


def cmd_eval(args: argparse.Namespace) -> int:
    from worker.routerlab.train import read_rows

    try:
        rows = read_rows(args.data)
    except (OSError, ValueError) as e:
        _err(str(e))
        return 1
    if args.cv:
        from worker.routerlab import train

        config = train.TrainConfig()
        full = train.fit(rows, config)  # its constant term is shared by every fold (see method())
        scores = evaluate.cross_validate(rows, train.method(config, common_bias=full["bias"]))
    else:
        scorer = _load(args.model)
        if scorer is None:
            return 1
        scores = scorer.score_many(r.prompt for r in rows)
    results = evaluate.compare(rows, scores, args.price_ratio)
    if args.json:
        print(
            json.dumps(
                {
                    "mode": "leave-domain-out" if args.cv else "fixed model",
                    "rows": len(rows),
                    "price_ratio": args.price_ratio,
                    **{k: m.as_dict() for k, m in results.items()},
                }
            )
        )
    else:
        print(f"{len(rows)} prompts, {'leave-domain-out CV' if args.cv else 'fixed model'}")
        print(_format_table(results, args.price_ratio))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from worker.routerlab.train import read_rows

    scorer = _load(args.model)
    if scorer is None:
        return 1
    try:
        rows = read_rows(args.data)
    except (OSError, ValueError) as e:
        _err(str(e))
        return 1
    scores = scorer.score_many(r.prompt for r in rows)
    ts, to = evaluate.calibrate(
        scores,
        [r.weak_correct for r in rows],
        [r.strong_correct for r in rows],
        target_quality=args.target_quality,
        target_top_share=args.top_share,
    )
    n = len(scores)
    shares = {
        "haiku": sum(s < ts for s in scores) / n,
        "sonnet": sum(ts <= s < to for s in scores) / n,
        "opus": sum(s >= to for s in scores) / n,
    }
    out = {
        "threshold_sonnet": None if math.isinf(ts) else ts,
        "threshold_opus": None if math.isinf(to) else to,
        "shares": shares,
        "rule": "score < threshold_sonnet -> haiku; < threshold_opus -> sonnet; else opus",
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(f"ROUTEQ_THRESHOLD_SONNET={out['threshold_sonnet']}")
        print(f"ROUTEQ_THRESHOLD_OPUS={out['threshold_opus']}")
        print("shares: " + ", ".join(f"{k} {v:.1%}" for k, v in shares.items()))
    return 0


def score_stream(scorer: Scorer, inp: TextIO, out: TextIO, err: TextIO) -> int:
    """One {"score": x} line per input line, in order; a bad line is reported and skipped (no output
    line for it), and the exit code is 1 if any line was bad. Blank lines are ignored."""
    bad = 0
    for n, line in enumerate(inp, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            prompt = obj.get("prompt") if isinstance(obj, dict) else None
            if not isinstance(prompt, str):
                raise ValueError('needs a JSON object with a string "prompt" field')
        except ValueError as e:  # json.JSONDecodeError is a ValueError
            bad += 1
            msg = f"not JSON: {e.msg}" if isinstance(e, json.JSONDecodeError) else str(e)
            print(f"routeq router score: line {n}: {msg}", file=err)
            continue
        out.write(json.dumps({"score": scorer.score(prompt)}) + "\n")
    out.flush()
    return 1 if bad else 0


def cmd_score(args: argparse.Namespace) -> int:
    scorer = _load(args.model)
    if scorer is None:
        return 1
    return score_stream(scorer, sys.stdin, sys.stdout, sys.stderr)


def cmd_export_labels(args: argparse.Namespace) -> int:
    from redis.asyncio import Redis

    from jobs.settings import Settings
    from worker.fleet.quality import export_labels

    settings = Settings()
    url = args.redis_url or settings.redis_url
    if not url:
        _err("no Redis URL: set REDIS_URL (or ROUTEQ_REDIS_URL) or pass --redis-url")
        return 1

    async def run() -> int:
        client = Redis.from_url(url)
        try:
            return await export_labels(client, settings.keys, args.out)
        finally:
            await client.aclose()

    try:
        n = asyncio.run(run())
    except (OSError, ConnectionError) as e:
        _err(f"export failed: {e}")
        return 1
    print(json.dumps({"out": str(args.out), "rows": n}))
    return 0
