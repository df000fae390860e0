"""What the scoring API accepts: the request bodies, the bearer check, and the error bodies.

Bodies are validated strictly (unknown fields, empty or over-long ids, non-scalar context values
are refused); a refusal is a 422 whose ``detail`` names each bad field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictBool, StrictFloat
from pydantic import StrictInt, StrictStr, StringConstraints, ValidationError

from streaming_jobs.contract import EVENT_TYPES, args_refusal
from streaming_jobs.event_fields import micros
from streaming_jobs.session_state import ARG_EVENT_ID as ID, ARG_TIME as TIME

MAX_BATCH = 100
MAX_PRECEDING = 50

Identifier = Annotated[str, StringConstraints(min_length=1, max_length=128,
                                              pattern=r"^[^\x00-\x1f\x7f]+$")]
ContextValue = Union[StrictStr, StrictInt, StrictFloat, StrictBool, None]


Number = Union[StrictInt, StrictFloat]


class ScoreEvent(BaseModel):
    """The event the shop is reacting to, in the clickstream contract's fields (its session and
    user are the request's). Judged by the contract's own rules (`ScoreRequest.event_refusal`)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    event_id: Identifier
    event_type: Literal[EVENT_TYPES]
    # strict: an ISO 8601 string with a zone, as the schema says (not a number of seconds)
    event_time: Annotated[AwareDatetime, Field(strict=True)]
    product_id: Optional[Identifier] = None
    category_id: Optional[Identifier] = None
    category_code: Optional[Identifier] = None
    brand: Optional[Identifier] = None
    price: Optional[Number] = None
    device: Optional[Identifier] = None
    country: Optional[Identifier] = None
    traffic_source: Optional[Identifier] = None
    page_type: Optional[Identifier] = None


class ScoreRequest(BaseModel):
    """One shopper at one moment: who, which session, which product (if any), the triggering
    event (if any), and context."""

    model_config = ConfigDict(extra="forbid")

    user_id: Identifier
    session_id: Identifier
    product_id: Optional[Identifier] = None
    event: Optional[ScoreEvent] = None
    # earlier events of the session the stream may not have applied yet (see streaming_jobs.moment)
    preceding_events: list[ScoreEvent] = Field(default_factory=list, max_length=MAX_PRECEDING)
    context: dict[Annotated[str, StringConstraints(min_length=1, max_length=64)],
                  ContextValue] = Field(default_factory=dict, max_length=32)

    def event_refusal(self) -> str | None:
        """Why the request's events cannot be folded (the contract's reason, or their order), or
        None. Not a 422: like the stream, which quarantines a bad event instead of failing, the
        API scores the request without them and flags it (`event_refused`)."""
        return self.args_refusal(self.event_args(), self.preceding_args())

    def args_refusal(self, event: tuple | None, preceding: list[tuple]) -> str | None:
        """`event_refusal`, given the request's `event_args()` and `preceding_args()` (the API
        builds them once, for this check and for the fold)."""
        if event is None:
            return "preceding_events without the triggering event" if self.preceding_events \
                else None
        reason = args_refusal(event)
        if reason is not None:
            return f"event {event[ID]}: {reason}"
        if preceding:
            for each in preceding:
                reason = args_refusal(each)
                if reason is not None:
                    return f"event {each[ID]}: {reason}"
            ids = [e[ID] for e in preceding] + [event[ID]]
            if len(set(ids)) < len(ids):
                return "preceding_events and event repeat an event_id"
            last = (event[TIME], event[ID])
            if any((e[TIME], e[ID]) > last for e in preceding):
                return "preceding_events must come before the triggering event"
        return None

    def _args(self, event: ScoreEvent) -> tuple:
        # `session_state.event_args` of the event's contract record (a test holds it to that),
        # built without the record: the body's fields are already text or None, the price a
        # number, the time zone-aware
        fields = event.__dict__
        price = fields["price"]
        return (self.session_id, fields["event_id"], micros(fields["event_time"]),
                fields["event_type"], self.user_id, fields["product_id"], fields["category_id"],
                None if price is None else float(price), fields["device"], fields["country"],
                fields["traffic_source"], fields["page_type"])

    def event_args(self) -> tuple | None:
        """The triggering event as the state machine applies it (`session_state.event_args`)."""
        return self._args(self.event) if self.event is not None else None

    def preceding_args(self) -> list[tuple]:
        return [self._args(e) for e in self.preceding_events] if self.preceding_events else []

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


class ScoreAnswer(BaseModel):
    """The 200 body of /score (one entry of /score/batch's `results`); docs/serving.md explains
    each field. Offer-policy fields (`exploration`, `assignment_probability`,
    `uplift_model_version`) are added when that policy decided."""

    model_config = ConfigDict(extra="allow")

    request_id: str
    probability: float
    band: str
    action: str
    offer: Optional[str]
    policy: str
    experiment: Optional[str]
    variant: Optional[str]
    expected_values: dict[str, Optional[float]]
    reasons: list[dict[str, Any]]
    model_version: Optional[str]
    scored_by: str
    fallback: list[str]
    missing_entities: list[str]
    latency_ms: float
    recommended_categories: list[str] = Field(
        description="the categories (category_code) the shopper is most likely to buy next, "
                    "best first, at most the ranker's k (3); the popularity prior's without a "
                    "session signal; empty when no ranker is loaded")


class BatchAnswer(BaseModel):
    """The 200 body of /score/batch: one answer per request, in order."""

    results: list[ScoreAnswer]


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
