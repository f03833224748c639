"""The demo corpus: a mixed bulk batch written by the project, deterministic for a given size.

It mirrors what teams push through a frontier model: many short classifications and extractions, some
translations and summaries, questions over a few long shared contracts (where prompt caching pays), and
a minority of real reasoning and code work.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

_SUBJECTS = [
    "invoice",
    "refund",
    "delivery",
    "password reset",
    "contract renewal",
    "bug report",
    "pricing",
    "account closure",
    "data export",
    "security incident",
    "onboarding",
    "billing dispute",
]
_PRODUCTS = ["Atlas Router", "Beacon CRM", "Cobalt Storage", "Delta Payments", "Ember Analytics"]
_LANGS = ["French", "German", "Spanish", "Japanese", "Portuguese"]


def _contract(rng: random.Random, name: str, clauses: int) -> str:
    parts = [f"MASTER SERVICES AGREEMENT — {name}\n"]
    for i in range(1, clauses + 1):
        party = rng.choice(["the Provider", "the Customer", "either party", "the Licensor"])
        term = rng.choice(
            ["thirty (30) days", "ninety (90) days", "twelve (12) months", "five (5) business days"]
        )
        parts.append(
            f"{i}. {rng.choice(['Confidentiality', 'Liability', 'Termination', 'Payment', 'Service Levels', 'Data Protection', 'Audit', 'Indemnity'])}. "
            f"{party.capitalize()} shall, within {term} of written notice, {rng.choice(['remedy any material breach', 'deliver the audit report', 'pay all undisputed invoices', 'return or destroy Confidential Information', 'restore the Service to the agreed availability'])}, "
            f"except where {rng.choice(['prevented by force majeure', 'otherwise agreed in writing', 'required by applicable law', 'the breach is caused by the other party'])}. "
            f"Liability under this clause is capped at {rng.choice(['the fees paid in the preceding twelve months', 'EUR 250,000', 'twice the annual fees', 'USD 1,000,000'])}.\n"
        )
    return "".join(parts)


def _ticket(rng: random.Random) -> str:
    s, p = rng.choice(_SUBJECTS), rng.choice(_PRODUCTS)
    return (
        f"Customer writes about a {s} for {p}: '{rng.choice(['Hi', 'Hello', 'Urgent'])}, "
        f"{rng.choice(['I was charged twice', 'the dashboard will not load', 'we need our data by Friday', 'the export is missing rows', 'my colleague left the company'])}. "
        f"Order #{rng.randint(10000, 99999)}. {rng.choice(['Please help.', 'Thanks.', 'This is blocking us.'])}'"
    )


def generate(n: int = 240, seed: int = 7) -> Iterator[dict[str, Any]]:
    """``n`` jobs (JSON-ready dicts in the job contract) with a realistic mix of tasks and sizes."""
    rng = random.Random(seed)
    contracts = [(f"contract-{c}.txt", _contract(rng, f"Customer {c}", 260)) for c in "ABC"]
    questions = [
        "What is the liability cap for data protection breaches?",
        "How long is the notice period for termination?",
        "Which obligations survive termination?",
        "Who bears audit costs?",
        "Summarise the payment terms.",
        "Are there any clauses that conflict with each other? Explain why.",
    ]
    label_schema = {
        "type": "object",
        "required": ["label", "urgency"],
        "properties": {
            "label": {"type": "string", "enum": [s.replace(" ", "_") for s in _SUBJECTS]},
            "urgency": {"type": "string", "enum": ["low", "medium", "high"]},
        },
    }
    extract_schema = {
        "type": "object",
        "required": ["order_id", "product"],
        "properties": {"order_id": {"type": "string"}, "product": {"type": "string"}},
    }
    mix = (
        ["classify"] * 30
        + ["extract"] * 15
        + ["translate"] * 10
        + ["summarize"] * 10
        + ["qa_contract"] * 20
        + ["reason"] * 7
        + ["code"] * 5
        + ["synthesize"] * 3
    )
    for i in range(n):
        kind = rng.choice(mix)
        tenant = rng.choice(["acme", "globex", "initech"])
        job: dict[str, Any]
        if kind == "classify":
            job = {
                "task": "classify",
                "prompt": f"Classify this support ticket and its urgency.\n\n{_ticket(rng)}",
                "output": {"type": "json", "schema": label_schema},
                "max_output_tokens": 64,
            }
        elif kind == "extract":
            job = {
                "task": "extract",
                "prompt": f"Extract the order id and product.\n\n{_ticket(rng)}",
                "output": {"type": "json", "schema": extract_schema},
                "max_output_tokens": 128,
            }
        elif kind == "translate":
            job = {
                "task": "translate",
                "prompt": f"Translate into {rng.choice(_LANGS)}:\n\n{_ticket(rng)}",
                "max_output_tokens": 400,
            }
        elif kind == "summarize":
            body = " ".join(_ticket(rng) for _ in range(rng.randint(3, 12)))
            job = {
                "task": "summarize",
                "prompt": "Summarise this ticket thread in three bullet points.",
                "documents": [{"name": f"thread-{i}.txt", "text": body}],
                "max_output_tokens": 300,
            }
        elif kind == "qa_contract":
            name, text = rng.choice(contracts)
            job = {
                "task": "qa",
                "system": "You are a careful contracts analyst. Quote clause numbers.",
                "prompt": rng.choice(questions),
                "documents": [{"name": name, "text": text}],
                "max_output_tokens": 500,
            }
        elif kind == "reason":
            job = {
                "task": "reason",
                "max_output_tokens": 1500,
                "prompt": (
                    f"Our {rng.choice(_PRODUCTS)} fleet grows {rng.randint(5, 40)}% a quarter. Derive, step by step, "
                    "when the current cluster of 12 nodes saturates at 70% utilisation, and compare the "
                    "trade-offs of scaling up versus sharding. Justify the recommendation."
                ),
            }
        elif kind == "code":
            job = {
                "task": "code",
                "max_output_tokens": 1200,
                "prompt": "Write a Python function that merges overlapping intervals and analyse its complexity. "
                "```python\ndef merge(intervals):\n    ...\n```",
            }
        else:
            job = {
                "task": "synthesize",
                "max_output_tokens": 1000,
                "prompt": "Design a rollout plan for migrating 40 services to a new message broker; evaluate risks "
                "and justify the order of migration.",
            }
        # One batch has one tenant: the demo's customers are labels of the tenant that enqueues them.
        job["tags"] = {"labels": {"source": "demo", "customer": tenant, "kind": kind, "item": str(i)}}
        yield job
