"""What a route declares about itself, next to its handler: `@operation(...)`.

The declaration is read by the OpenAPI document (`openapi.document`: body, answers, errors,
parameters), by authentication (`public`, `creates_jobs`: which routes count toward the
tenant's quota) and by the tests (every route has one). A route's document can therefore
not drift from the route: both are the same object.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel

# The ids vlmq makes: a prefix and hex digits (an id of another shape is simply a 404).
ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
View = TypeVar("View", bound=Callable[..., Any])
# An answer: a response model (JSON), or content entries by media type.
Answer = type[BaseModel] | dict[str, Any]


@dataclass(frozen=True)
class Param:
    """A query, path or header parameter."""

    name: str
    where: str
    schema: dict[str, Any]
    description: str = ""
    required: bool = False

    def to_openapi(self) -> dict[str, Any]:
        """The parameter object."""
        value: dict[str, Any] = {"name": self.name, "in": self.where, "schema": self.schema}
        if self.description:
            value["description"] = self.description
        if self.required or self.where == "path":
            value["required"] = True
        return value


def path_id(name: str) -> Param:
    """An object id in the path (the default of every path parameter)."""
    return Param(name, "path", {"type": "string", "pattern": ID_PATTERN})


LIMIT = Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 100}, "Page size.")


def after(noun: str) -> Param:
    """The keyset cursor of a list."""
    return Param(
        "after", "query", {"type": "string", "pattern": ID_PATTERN}, f"The last {noun} id seen."
    )


IDEMPOTENCY_KEY = Param(
    "Idempotency-Key",
    "header",
    {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
    "A repeated request with the same key answers with the object the first one made.",
)


def text(mime: str, fmt: str | None = None) -> dict[str, Any]:
    """A content entry of plain bytes or text."""
    schema: dict[str, Any] = {"type": "string"}
    if fmt:
        schema["format"] = fmt
    return {mime: {"schema": schema}}


@dataclass(frozen=True)
class Operation:
    """One route: what it takes, what it answers, and how it is guarded."""

    summary: str
    tag: str
    answers: dict[int, Answer]
    errors: tuple[int, ...] = ()
    body: type[BaseModel] | None = None
    multipart: dict[str, Any] | None = None
    params: tuple[Param, ...] = ()
    # No API key needed (health, metrics, the playground).
    public: bool = False
    # Creates interactive jobs: authentication counts the tenant's unfinished jobs for the
    # quota, and a tenant at its cap is refused before the body is read.
    creates_jobs: bool = False
    links: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, Any] = field(default_factory=dict)
    # The OpenAPI operationId; by default the handler's name in camelCase.
    operation_id: str | None = None


def operation(**declared: Any) -> Callable[[View], View]:
    """Declare a route's operation on its handler (below `@bp.get(...)` and the like)."""
    declaration = Operation(**declared)

    def declare(view: View) -> View:
        view.operation = declaration  # type: ignore[attr-defined]
        return view

    return declare


def operation_of(view: Callable[..., Any] | None) -> Operation | None:
    """The operation a handler declares, if any."""
    value = getattr(view, "operation", None)
    return value if isinstance(value, Operation) else None
