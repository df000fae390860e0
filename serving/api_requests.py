"""What the scoring API accepts: the request bodies, the bearer check, and the error bodies.

Bodies are validated strictly (unknown fields, empty or over-long ids, non-scalar context values
are refused); a refusal is a 422 whose ``detail`` names each bad field.
"""

from __future__ import annotations

from typing import Annotated, Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr
from pydantic import StringConstraints, ValidationError

MAX_BATCH = 100

Identifier = Annotated[str, StringConstraints(min_length=1, max_length=128,
                                              pattern=r"^[^\x00-\x1f\x7f]+$")]
ContextValue = Union[StrictStr, StrictInt, StrictFloat, StrictBool, None]


class ScoreRequest(BaseModel):
    """One shopper at one moment: who, which session, which product (if any), and context."""

    model_config = ConfigDict(extra="forbid")

    user_id: Identifier
    session_id: Identifier
    product_id: Optional[Identifier] = None
    context: dict[Annotated[str, StringConstraints(min_length=1, max_length=64)],
                  ContextValue] = Field(default_factory=dict, max_length=32)


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requests: list[ScoreRequest] = Field(min_length=1, max_length=MAX_BATCH)


_UNION_BRANCHES = {"str", "int", "float", "bool", "none"}


def error_list(error: ValidationError) -> list[dict[str, Any]]:
    """One entry per bad field: where (dotted path in the body), what is wrong, error type."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for item in error.errors():
        loc = [str(part) for part in item.get("loc", ()) if part != "body"]
        message, kind = item.get("msg"), item.get("type")
        if len(loc) >= 3 and loc[0] == "context" and loc[-1] in _UNION_BRANCHES:
            # pydantic reports each branch of the value union; say it once
            loc = loc[:-1]
            message, kind = "context values must be a string, number, boolean or null", \
                "context_value_type"
        where = ".".join(loc) or "body"
        if where in seen:
            continue
        seen.add(where)
        out.append({"field": where, "message": message, "type": kind})
    return out


class FieldError(BaseModel):
    """One bad field of a refused request."""

    field: str = Field(description="dotted path in the body (`body` for the body as a whole)")
    message: str
    type: str = Field(description="pydantic's error type, or `context_value_type`")


class InvalidRequest(BaseModel):
    """The 422 body: what `invalid` returns."""

    error: str
    detail: list[FieldError]


class Unauthorized(BaseModel):
    """The 401 body."""

    error: str


UNAUTHORIZED = {"error": "a valid bearer token is required"}
CHALLENGE = (b"www-authenticate", b'Bearer realm="intent"')


def invalid(error: ValidationError) -> dict[str, Any]:
    """The 422 body for a request that failed validation."""
    return {"error": "invalid request", "detail": error_list(error)}
