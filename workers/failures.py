"""A model call's failure in words a client can act on.

The exception itself (its class, its internal text) goes to the worker's log with the job
id; the client reads what to change in the request. A failure reported here has already
happened with the request run alone (see `Scheduler`), so its cause is in the request.
"""

from __future__ import annotations

# (words in the exception's text, what the client reads), first match wins.
KNOWN_CAUSES: list[tuple[tuple[str, ...], str]] = [
    (
        ("aspect ratio",),
        "an image's aspect ratio is too extreme for this model: crop or pad it",
    ),
    (
        ("out of memory", "outofmemory"),
        "the request needs more accelerator memory than is free: send smaller or fewer "
        "images, or lower max_tokens",
    ),
    (
        ("truncated", "cannot identify image", "decoder", "broken data stream"),
        "an image could not be decoded: send it again as PNG or JPEG",
    ),
    (
        ("sequence length", "maximum context", "max_position", "index out of range", "too long"),
        "the request is longer than the model can take: shorten the messages or lower max_tokens",
    ),
    (
        ("probability tensor", "inf", "nan"),
        "the sampling settings made the model's output invalid: try temperature 0, or a "
        "top_p closer to 1",
    ),
]
FALLBACK = (
    "the model could not process this request, although it was run on its own: check its "
    "images and text; the operator's logs have the details under this job's id"
)


def client_message(exc: BaseException) -> str:
    """What the client reads about a failed model call (no class names, no internals)."""
    text = f"{type(exc).__name__} {exc}".lower()
    for needles, message in KNOWN_CAUSES:
        if any(needle in text for needle in needles):
            return message
    return FALLBACK
