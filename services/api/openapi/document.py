"""The OpenAPI 3.1 document, generated from the app's routes and what each declares.

Every path and method comes from Flask's URL map, and everything about an operation (its
body, answers, errors, parameters) from the `@operation` its handler declares, with the
request and response models as component schemas. Nothing is written twice, so the
document cannot drift from the routes; `undeclared_routes(app)` (the tests want none) finds
a route that declares nothing.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Flask
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from werkzeug.routing import Rule

from services.api.openapi.declare import Answer, Operation, operation_of, path_id
from services.core.responses.errors import ErrorResponse

REF = "#/components/schemas/{model}"
# What each error status means, for every operation that can answer it.
ERROR_MEANINGS = {
    400: "The request is malformed or asks for something vlmq does not do.",
    401: "Missing or unknown API key.",
    404: "No such object for this tenant (another tenant's id is a 404 too), or no such model.",
    409: "The request conflicts with the object's state (or an `Idempotency-Key` in use).",
    413: "The body, an image or its pixel count is over the limit.",
    415: "An image in a format vlmq does not decode.",
    422: "An image that does not decode, or an `Idempotency-Key` reused with another body.",
    429: "Over the tenant's rate limit or queue quota (jobs or tokens), over the model's "
    "queue wait for this work, or (a synchronous call) its job expired unstarted; see "
    "`Retry-After`.",
    500: "The job behind a synchronous call failed in the worker.",
    503: "A dependency (database, Redis) is down; retry after `Retry-After`.",
    504: "A synchronous call waited longer than its limit; the job goes on.",
}
# Every authenticated route can answer these.
AUTHENTICATED = (401, 429, 503)
# Routes that describe the API itself or serve its pages' assets, not part of it.
UNDOCUMENTED = re.compile(r"^/(openapi\.json|docs|static)|favicon|^/playground/")
PATH_PARAM = re.compile(r"<(?:[\w]+:)?(\w+)>")


def json_of(model: type[BaseModel]) -> dict[str, Any]:
    """A JSON content entry referring to a component."""
    return {"application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}}


def content_of(answer: Answer) -> dict[str, Any]:
    """The content entries of an answer: a model's JSON, or entries by media type (each a
    model or a media type object)."""
    if isinstance(answer, type):
        return json_of(answer)
    return {
        mime: json_of(entry)["application/json"] if isinstance(entry, type) else entry
        for mime, entry in answer.items()
    }


def models_of(answer: Answer) -> list[type[BaseModel]]:
    """The models an answer refers to."""
    if isinstance(answer, type):
        return [answer]
    return [entry for entry in answer.values() if isinstance(entry, type)]


def camel_case(name: str) -> str:
    """`create_job` as `createJob`."""
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def operation_object(operation: Operation, path: str, handler_name: str) -> dict[str, Any]:
    """One operation of the document."""
    responses: dict[str, Any] = {}
    for status, answer in operation.answers.items():
        entry: dict[str, Any] = {
            "description": "OK" if status < 300 else "Not ready",
            "content": content_of(answer),
        }
        if operation.links and status < 300:
            entry["links"] = operation.links
        if operation.headers and status < 300:
            entry["headers"] = operation.headers
        responses[str(status)] = entry
    errors = (*operation.errors, *(() if operation.public else AUTHENTICATED))
    for status in sorted(set(errors)):
        responses[str(status)] = {
            "description": ERROR_MEANINGS[status],
            "content": json_of(ErrorResponse),
        }
    value: dict[str, Any] = {
        "operationId": operation.operation_id or camel_case(handler_name),
        "summary": operation.summary,
        "tags": [operation.tag],
        "responses": responses,
    }
    declared = {param.name for param in operation.params}
    params = [
        path_id(name).to_openapi() for name in re.findall(r"{(\w+)}", path) if name not in declared
    ]
    params += [param.to_openapi() for param in operation.params]
    if params:
        value["parameters"] = params
    content: dict[str, Any] = {}
    if operation.body is not None:
        content.update(json_of(operation.body))
    if operation.multipart is not None:
        content["multipart/form-data"] = {"schema": operation.multipart}
    if content:
        value["requestBody"] = {"required": True, "content": content}
    if operation.public:
        value["security"] = []
    return value


def documented_rules(app: Flask) -> list[tuple[Rule, str, str]]:
    """Every (rule, method, OpenAPI path) the app serves, its own documentation aside."""
    rules = []
    for rule in app.url_map.iter_rules():
        if UNDOCUMENTED.search(rule.rule):
            continue
        path = PATH_PARAM.sub(r"{\1}", rule.rule)
        for method in sorted(rule.methods or ()):
            if method not in ("HEAD", "OPTIONS"):
                rules.append((rule, method.lower(), path))
    return rules


def undeclared_routes(app: Flask) -> set[tuple[str, str]]:
    """Routes of the app whose handler declares no operation (the tests want none)."""
    return {
        (method, path)
        for rule, method, path in documented_rules(app)
        if operation_of(app.view_functions[rule.endpoint]) is None
    }


def build_document(app: Flask, version: str) -> dict[str, Any]:
    """The whole OpenAPI 3.1 document of `app`."""
    paths: dict[str, dict[str, Any]] = {}
    models: dict[str, tuple[type[BaseModel], Any]] = {
        "ErrorResponse": (ErrorResponse, "serialization")
    }
    for rule, method, path in documented_rules(app):
        handler = app.view_functions[rule.endpoint]
        operation = operation_of(handler)
        if operation is None:
            continue
        paths.setdefault(path, {})[method] = operation_object(operation, path, handler.__name__)
        if operation.body is not None:
            models[operation.body.__name__] = (operation.body, "validation")
        for answer in operation.answers.values():
            for model in models_of(answer):
                models[model.__name__] = (model, "serialization")
    _, definitions = models_json_schema(list(models.values()), ref_template=REF)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "vlmq",
            "version": version,
            "description": "A job queue for vision-language models: submit-then-poll jobs, "
            "webhooks, batches, and the OpenAI-compatible chat, files, batches and "
            "moderation API.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": dict(definitions.get("$defs", {})),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
