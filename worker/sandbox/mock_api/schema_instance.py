"""A small, deterministic instance of a JSON Schema (the subset routeq's output schemas use).

Covers type (and type lists), enum, const, object properties/required, array items/minItems/maxItems,
string minLength/maxLength/format, number and integer bounds and multipleOf, anyOf/oneOf (first
branch), allOf (merged), and local ``$ref`` into ``$defs``/``definitions``. Choices (enum members,
booleans, numbers) come from a hash of the prompt and the value's path, so the same prompt gets the
same instance on every model; ``variant`` shifts every choice (used to make one model disagree).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

_FORMATS = {
    "date": "2026-01-01",
    "date-time": "2026-01-01T00:00:00Z",
    "time": "00:00:00Z",
    "email": "mock@example.com",
    "uri": "https://example.com/mock",
    "uuid": "00000000-0000-4000-8000-000000000000",
}
_MAX_DEPTH = 12


class _Gen:
    def __init__(self, root: dict[str, Any], seed: bytes, variant: int) -> None:
        self.root = root
        self.seed = seed
        self.variant = variant

    def choice(self, path: str, n: int) -> int:
        h = hashlib.blake2b(self.seed + path.encode(), digest_size=8).digest()
        return (int.from_bytes(h, "little") + self.variant) % n

    def resolve(self, schema: Any) -> dict[str, Any]:
        seen = 0
        while isinstance(schema, dict) and "$ref" in schema and seen < _MAX_DEPTH:
            ref = str(schema["$ref"])
            if not ref.startswith("#"):
                return {}
            node: Any = self.root
            for part in ref.lstrip("#").strip("/").split("/"):
                name = part.replace("~1", "/").replace("~0", "~")
                if part:
                    node = node.get(name, {}) if isinstance(node, dict) else {}
            schema = node
            seen += 1
        return schema if isinstance(schema, dict) else {}

    def value(self, schema: Any, path: str, depth: int = 0) -> Any:
        s = self.resolve(schema)
        if depth > _MAX_DEPTH:
            return None
        if "const" in s:
            return s["const"]
        if isinstance(s.get("enum"), list) and s["enum"]:
            return s["enum"][self.choice(path, len(s["enum"]))]
        for key in ("anyOf", "oneOf"):
            if isinstance(s.get(key), list) and s[key]:
                return self.value(s[key][0], path, depth + 1)
        if isinstance(s.get("allOf"), list):
            merged: dict[str, Any] = {k: v for k, v in s.items() if k != "allOf"}
            for part in s["allOf"]:
                for k, v in self.resolve(part).items():
                    if k in ("properties",) and isinstance(v, dict):
                        merged[k] = {**merged.get(k, {}), **v}
                    elif k == "required" and isinstance(v, list):
                        merged[k] = [*merged.get(k, []), *v]
                    else:
                        merged.setdefault(k, v)
            return self.value(merged, path, depth + 1)
        t = s.get("type")
        if isinstance(t, list):
            t = next((x for x in t if x != "null"), "null")
        if t is None:
            t = "object" if "properties" in s else "array" if "items" in s else "string"
        return self._typed(str(t), s, path, depth)

    def _typed(self, t: str, s: dict[str, Any], path: str, depth: int) -> Any:
        if t == "object":
            props = s.get("properties") or {}
            required = [r for r in s.get("required") or [] if isinstance(r, str)]
            out: dict[str, Any] = {}
            for name in required:
                out[name] = self.value(props.get(name, {}), f"{path}/{name}", depth + 1)
            for _ in range(int(s.get("minProperties", 0)) - len(out)):
                extra = next((p for p in props if p not in out), None)
                if extra is None:
                    break
                out[extra] = self.value(props[extra], f"{path}/{extra}", depth + 1)
            return out
        if t == "array":
            lo = int(s.get("minItems", 1))
            hi = s.get("maxItems")
            n = lo if hi is None else min(lo, int(hi))
            items = s.get("prefixItems") or []
            vals = [
                self.value(items[i] if i < len(items) else s.get("items", {}), f"{path}/{i}", depth + 1)
                for i in range(n)
            ]
            return vals
        if t == "string":
            return self._string(s, path)
        if t in ("number", "integer"):
            return self._number(t, s, path)
        if t == "boolean":
            return self.choice(path, 2) == 1
        return None

    def _string(self, s: dict[str, Any], path: str) -> str:
        fmt = s.get("format")
        if isinstance(fmt, str) and fmt in _FORMATS:
            return _FORMATS[fmt]
        lo = int(s.get("minLength", 0))
        hi = s.get("maxLength")
        base = f"mock-{self.choice(path, 10_000):04d}"
        text = base if len(base) >= lo else (base * (lo // len(base) + 1))[:lo]
        return text if hi is None else text[: int(hi)]

    def _number(self, t: str, s: dict[str, Any], path: str) -> int | float:
        lo = s.get("minimum")
        hi = s.get("maximum")
        if s.get("exclusiveMinimum") is not None:
            lo = float(s["exclusiveMinimum"]) + (1 if t == "integer" else 1e-6)
        if s.get("exclusiveMaximum") is not None:
            hi = float(s["exclusiveMaximum"]) - (1 if t == "integer" else 1e-6)
        lo_f = float(lo) if lo is not None else 0.0
        hi_f = float(hi) if hi is not None else lo_f + 100.0
        if t == "integer":
            a, b = math.ceil(lo_f), math.floor(hi_f)
            step = int(s.get("multipleOf", 1)) or 1
            first = math.ceil(a / step) * step
            count = max(1, (b - first) // step + 1)
            return first + step * self.choice(path, count)
        if hi_f <= lo_f:
            return lo_f
        frac = self.choice(path, 1001) / 1000
        # Rounding keeps the JSON short; the clamp keeps it inside the bounds after rounding.
        return min(max(round(lo_f + (hi_f - lo_f) * frac, 6), lo_f), hi_f)


def instance_of(schema: dict[str, Any], seed: bytes, variant: int = 0) -> Any:
    return _Gen(schema, seed, variant).value(schema, "#")
