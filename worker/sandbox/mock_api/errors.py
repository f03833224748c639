"""The API's error envelope: ``{"type":"error","error":{"type","message"[,"details"]},"request_id"}``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


@dataclass(slots=True)
class ApiError(Exception):
    status: int
    message: str
    headers: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] | None = None

    @property
    def error_type(self) -> str:
        return ERROR_TYPES.get(self.status, "api_error")

    def body(self, request_id: str) -> bytes:
        err: dict[str, Any] = {"type": self.error_type, "message": self.message}
        if self.details is not None:
            err["details"] = self.details
        return orjson.dumps({"type": "error", "error": err, "request_id": request_id})


def invalid(message: str) -> ApiError:
    return ApiError(400, message)
