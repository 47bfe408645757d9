"""The shared base of the request bodies, and `parse`, the one way a body becomes a model.

A route and a batch line parse the same body with the same model, so they accept and refuse
the same fields with the same `400`. Rules that depend on the deployment (caps, limits) read
its `Settings` from the validation context; rules that depend on where the body came from
read `where` ("endpoint" or "batch_line").
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
)

from services.core.config import Settings
from services.core.errors import InvalidRequestError

Where = Literal["endpoint", "batch_line"]
RequestT = TypeVar("RequestT", bound=BaseModel)

# A 16×16 PNG of a red circle, for the examples of the OpenAPI document (its docs page and
# schemathesis send them as they are).
EXAMPLE_IMAGE = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAABAAAAAQCAIAAACQkWg2AAAATklEQVR4nGP8//8/"
    "AymAiSTV5GhgwSLGyIhgYzgYwwZk1ZhcdA0Y0piCTLgkcOmhfShRogFPlCNJMeGSwCWI4SQ0PRhGYItpvMmR9qEEA"
    "G9gEx+a1gc3AAAAAElFTkSuQmCC"
)
EXAMPLE_MESSAGES: list[Any] = [
    {
        "role": "user",
        "content": [
            {"type": "image_url", "image_url": {"url": EXAMPLE_IMAGE}},
            {"type": "text", "text": "What color is the shape?"},
        ],
    }
]


class VlmqRequest(BaseModel):
    """A request body: unknown fields are refused, so a typo never passes silently.

    Models of OpenAI-shaped bodies set `OPENAI_COMPATIBLE` instead: their clients send
    fields vlmq does not read, and vLLM ignores those too (the ones that would change the
    answer are refused by name, see `requests.chat`).
    """

    model_config = ConfigDict(extra="forbid")


OPENAI_COMPATIBLE = ConfigDict(extra="ignore")

# OpenAI's metadata: up to 16 pairs, keys up to 64 characters, values up to 512 (every job
# of a request keeps a copy).
Metadata = Annotated[
    dict[
        Annotated[str, StringConstraints(max_length=64)],
        Annotated[str, StringConstraints(max_length=512)],
    ],
    Field(max_length=16),
]


def parse(
    model: type[RequestT], body: Any, settings: Settings, where: Where = "endpoint"
) -> RequestT:
    """`body` validated as `model` for this deployment, or a 400 naming the first bad field."""
    if not isinstance(body, dict):
        raise InvalidRequestError("body must be a JSON object", param="body")
    try:
        return model.model_validate(body, context={"settings": settings, "where": where})
    except ValidationError as exc:
        raise InvalidRequestError(first_error(exc), param=first_param(exc)) from exc


def settings_of(info: ValidationInfo) -> Settings:
    """The deployment's settings a model is validated for."""
    context = info.context or {}
    settings = context.get("settings")
    # A model validated without `parse` (a unit test, a default) gets the defaults.
    return settings if isinstance(settings, Settings) else Settings(_env_file=None)  # type: ignore[call-arg]


def where_of(info: ValidationInfo) -> Where:
    """Where the body being validated came from."""
    where = (info.context or {}).get("where", "endpoint")
    return "batch_line" if where == "batch_line" else "endpoint"


def first_error(exc: ValidationError) -> str:
    """A one-line message from a pydantic validation error."""
    first = exc.errors()[0]
    location = ".".join(str(part) for part in first.get("loc", ()))
    message = str(first.get("msg")).removeprefix("Value error, ")
    return f"{location}: {message}" if location else message


def first_param(exc: ValidationError) -> str | None:
    """The name of the first field a pydantic validation error is about."""
    errors = exc.errors()
    if errors and errors[0].get("loc"):
        return str(errors[0]["loc"][0])
    return None
