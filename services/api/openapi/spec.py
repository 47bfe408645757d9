"""The OpenAPI 3.1 document of the API, built from the pydantic models that validate request
bodies (`services.api.*.protocol`) and describe responses (`services.core.shapes`).

Each route is declared once here as an `Operation`: its body, parameters, answers and the
errors it can give. `check_covers(app)` (run by the tests) fails when a Flask route has no
operation, so a new route cannot go undocumented.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from flask import Flask
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from services.api.batches.protocol import BatchCreateRequest
from services.api.chat.protocol import ChatCompletionRequest
from services.api.jobs.protocol import JobCreateRequest
from services.api.moderations.protocol import ModerationRequest, PolicyRequest
from services.api.presets.protocol import PresetRequest
from services.core import shapes

REF = "#/components/schemas/{model}"
# The ids vlmq makes: a prefix and hex digits (an id of another shape is simply a 404).
ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
REQUEST_MODELS: tuple[type[BaseModel], ...] = (
    JobCreateRequest,
    ChatCompletionRequest,
    ModerationRequest,
    PolicyRequest,
    PresetRequest,
    BatchCreateRequest,
)
# What each error status means, for every operation that can answer it.
ERROR_MEANINGS = {
    400: "The request is malformed or asks for something vlmq does not do.",
    401: "Missing or unknown API key.",
    404: "No such object for this tenant (another tenant's id is a 404 too), or no such model.",
    409: "The request conflicts with the object's state (or an `Idempotency-Key` in use).",
    413: "The body, an image or its pixel count is over the limit.",
    415: "An image in a format vlmq does not decode.",
    422: "An image that does not decode.",
    429: "Over the tenant's rate limit or queue quota; see `Retry-After`.",
    500: "The job behind a synchronous call failed in the worker.",
    503: "A dependency (database, Redis) is down; retry after `Retry-After`.",
    504: "A synchronous call waited longer than its limit; the job goes on.",
}
# Every authenticated route can answer these.
AUTHENTICATED = (401, 429, 503)
# Every route with a body that holds images can answer these.
IMAGES = (400, 413, 415, 422)


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
    """An object id in the path."""
    return Param(name, "path", {"type": "string", "pattern": ID_PATTERN})


LIMIT = Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 100}, "Page size.")


def after(noun: str) -> Param:
    """The keyset cursor of a list."""
    return Param(
        "after", "query", {"type": "string", "pattern": ID_PATTERN}, f"The last {noun} id seen."
    )


PRESET_NAME = Param(
    "name", "path", {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"}
)
PREFER = Param(
    "Prefer",
    "header",
    {"type": "string", "pattern": r"^wait=[0-9]{1,2}$"},
    "`wait=N`: answer once the job ended or N seconds passed (capped by the deployment).",
)
IDEMPOTENCY_KEY = Param(
    "Idempotency-Key",
    "header",
    {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
    "A repeated request with the same key answers with the job the first one made.",
)


@dataclass(frozen=True)
class Operation:
    """One route: what it takes and what it answers."""

    method: str
    path: str
    operation_id: str
    summary: str
    tag: str
    answers: dict[int, Any]
    errors: tuple[int, ...] = ()
    body: type[BaseModel] | None = None
    multipart: dict[str, Any] | None = None
    params: tuple[Param, ...] = ()
    authenticated: bool = True
    links: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, Any] = field(default_factory=dict)


def json_of(model: type[BaseModel]) -> dict[str, Any]:
    """A JSON content entry referring to a component."""
    return {"application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}}


def text(mime: str, fmt: str | None = None) -> dict[str, Any]:
    """A content entry of plain bytes or text."""
    schema: dict[str, Any] = {"type": "string"}
    if fmt:
        schema["format"] = fmt
    return {mime: {"schema": schema}}


JOB_FORM = {
    "type": "object",
    "required": ["image", "question"],
    "properties": {
        "image": {"type": "string", "format": "binary"},
        "question": {"type": "string", "minLength": 1},
        "max_tokens": {"type": "integer", "minimum": 1},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "seed": {"type": "integer"},
        "model": {"type": "string"},
        "preset": {"type": "string"},
        "webhook": {"type": "string"},
    },
}
FILE_FORM = {
    "type": "object",
    "required": ["file", "purpose"],
    "properties": {
        "file": {"type": "string", "format": "binary"},
        "purpose": {"type": "string", "enum": ["batch"]},
        "expires_after[anchor]": {"type": "string", "enum": ["created_at"]},
        "expires_after[seconds]": {"type": "integer", "minimum": 3600, "maximum": 2592000},
    },
}
JOB_LINKS = {
    "GetJob": {"operationId": "getJob", "parameters": {"job_id": "$response.body#/id"}},
    "CancelJob": {"operationId": "cancelJob", "parameters": {"job_id": "$response.body#/id"}},
}
BATCH_LINKS = {
    "GetBatch": {"operationId": "getBatch", "parameters": {"batch_id": "$response.body#/id"}},
    "CancelBatch": {
        "operationId": "cancelBatch",
        "parameters": {"batch_id": "$response.body#/id"},
    },
}
FILE_LINKS = {
    "GetFile": {"operationId": "getFile", "parameters": {"file_id": "$response.body#/id"}},
    "DeleteFile": {"operationId": "deleteFile", "parameters": {"file_id": "$response.body#/id"}},
}
LOCATION = {"Location": {"schema": {"type": "string"}, "description": "The job's URL."}}

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "post",
        "/v1/jobs",
        "createJob",
        "Submit a job: an image (JSON data URL or URL, or a multipart upload) and a question, "
        "or OpenAI `messages`.",
        "jobs",
        {202: json_of(shapes.JobObject)},
        (*IMAGES, 404, 409),
        body=JobCreateRequest,
        multipart=JOB_FORM,
        params=(PREFER, IDEMPOTENCY_KEY),
        links=JOB_LINKS,
        headers=LOCATION,
    ),
    Operation(
        "get",
        "/v1/jobs",
        "listJobs",
        "The tenant's jobs, newest first.",
        "jobs",
        {200: json_of(shapes.JobList)},
        (400, 404),
        params=(
            LIMIT,
            after("job"),
            Param(
                "status",
                "query",
                {
                    "type": "string",
                    "enum": ["queued", "running", "succeeded", "failed", "canceled"],
                },
            ),
        ),
    ),
    Operation(
        "get",
        "/v1/jobs/{job_id}",
        "getJob",
        "Poll one job.",
        "jobs",
        {200: json_of(shapes.JobObject)},
        (404,),
        params=(path_id("job_id"),),
    ),
    Operation(
        "post",
        "/v1/jobs/{job_id}/cancel",
        "cancelJob",
        "Cancel a queued or running job (a finished one is a 409).",
        "jobs",
        {200: json_of(shapes.JobObject)},
        (404, 409),
        params=(path_id("job_id"),),
    ),
    Operation(
        "get",
        "/v1/jobs/{job_id}/webhook_deliveries",
        "listJobWebhookDeliveries",
        "The job's webhook events: status, attempts, and the last attempt's answer.",
        "jobs",
        {200: json_of(shapes.WebhookDeliveryList)},
        (404,),
        params=(path_id("job_id"),),
    ),
    Operation(
        "post",
        "/v1/chat/completions",
        "createChatCompletion",
        "OpenAI chat completion (images as `image_url` parts), answered when the job ends; "
        "`stream: true` answers server-sent events.",
        "openai",
        {200: {**json_of(shapes.ChatCompletion), **text("text/event-stream")}},
        (*IMAGES, 404, 409, 500, 504),
        body=ChatCompletionRequest,
        params=(IDEMPOTENCY_KEY,),
    ),
    Operation(
        "post",
        "/v1/moderations",
        "createModeration",
        "OpenAI moderation of images (and text), each category a yes/no question.",
        "openai",
        {200: json_of(shapes.ModerationResponse)},
        (*IMAGES, 404, 500, 504),
        body=ModerationRequest,
    ),
    Operation(
        "get",
        "/v1/moderations/policy",
        "getModerationPolicy",
        "The tenant's moderation categories.",
        "moderation",
        {200: json_of(shapes.ModerationPolicy)},
    ),
    Operation(
        "put",
        "/v1/moderations/policy",
        "putModerationPolicy",
        "Replace the tenant's moderation categories.",
        "moderation",
        {200: json_of(shapes.ModerationPolicy)},
        (400, 413),
        body=PolicyRequest,
    ),
    Operation(
        "post",
        "/v1/files",
        "uploadFile",
        "Upload a JSONL batch input file (multipart: `file`, `purpose=batch`).",
        "openai",
        {200: json_of(shapes.FileObject)},
        (400, 413),
        multipart=FILE_FORM,
        links=FILE_LINKS,
    ),
    Operation(
        "get",
        "/v1/files",
        "listFiles",
        "The tenant's files, newest first.",
        "openai",
        {200: json_of(shapes.FileList)},
        (400, 404),
        params=(
            Param("purpose", "query", {"type": "string", "enum": ["batch", "batch_output"]}),
            LIMIT,
            after("file"),
        ),
    ),
    Operation(
        "get",
        "/v1/files/{file_id}",
        "getFile",
        "A file object.",
        "openai",
        {200: json_of(shapes.FileObject)},
        (404,),
        params=(path_id("file_id"),),
    ),
    Operation(
        "delete",
        "/v1/files/{file_id}",
        "deleteFile",
        "Delete a file (a 409 while an unfinished batch reads it).",
        "openai",
        {200: json_of(shapes.FileDeleted)},
        (404, 409),
        params=(path_id("file_id"),),
    ),
    Operation(
        "get",
        "/v1/files/{file_id}/content",
        "getFileContent",
        "A file's bytes.",
        "openai",
        {200: text("application/jsonl", "binary")},
        (404,),
        params=(path_id("file_id"),),
    ),
    Operation(
        "post",
        "/v1/batches",
        "createBatch",
        "Start a batch from an uploaded input file.",
        "openai",
        {200: json_of(shapes.BatchObject)},
        (400, 404, 409, 413),
        body=BatchCreateRequest,
        links=BATCH_LINKS,
    ),
    Operation(
        "get",
        "/v1/batches",
        "listBatches",
        "The tenant's batches, newest first.",
        "openai",
        {200: json_of(shapes.BatchList)},
        (400, 404),
        params=(LIMIT, after("batch")),
    ),
    Operation(
        "get",
        "/v1/batches/{batch_id}",
        "getBatch",
        "A batch and its counts.",
        "openai",
        {200: json_of(shapes.BatchObject)},
        (404,),
        params=(path_id("batch_id"),),
    ),
    Operation(
        "post",
        "/v1/batches/{batch_id}/cancel",
        "cancelBatch",
        "Cancel a batch's queued lines; it ends `cancelled`.",
        "openai",
        {200: json_of(shapes.BatchObject)},
        (404, 409),
        params=(path_id("batch_id"),),
    ),
    Operation(
        "get",
        "/v1/batches/{batch_id}/webhook_deliveries",
        "listBatchWebhookDeliveries",
        "The batch's webhook events.",
        "openai",
        {200: json_of(shapes.WebhookDeliveryList)},
        (404,),
        params=(path_id("batch_id"),),
    ),
    Operation(
        "get",
        "/v1/webhooks/default/secret",
        "getWebhookSecret",
        "The tenant's Standard Webhooks secret, to verify `webhook-signature`.",
        "webhooks",
        {200: json_of(shapes.WebhookSecret)},
    ),
    Operation(
        "get",
        "/v1/presets",
        "listPresets",
        "Every prompt preset the tenant can use: its own and the deployment's.",
        "presets",
        {200: json_of(shapes.PresetList)},
    ),
    Operation(
        "get",
        "/v1/presets/{name}",
        "getPreset",
        "One preset by name (the tenant's own, else the deployment's).",
        "presets",
        {200: json_of(shapes.Preset)},
        (404,),
        params=(PRESET_NAME,),
    ),
    Operation(
        "put",
        "/v1/presets/{name}",
        "putPreset",
        "Create or replace one of the tenant's presets.",
        "presets",
        {200: json_of(shapes.Preset)},
        (400, 409),
        body=PresetRequest,
        params=(PRESET_NAME,),
    ),
    Operation(
        "delete",
        "/v1/presets/{name}",
        "deletePreset",
        "Delete one of the tenant's presets.",
        "presets",
        {200: json_of(shapes.PresetDeleted)},
        (404,),
        params=(PRESET_NAME,),
    ),
    Operation(
        "get",
        "/v1/models",
        "listModels",
        "The served model and its LoRA adapters.",
        "openai",
        {200: json_of(shapes.ModelList)},
    ),
    Operation(
        "get",
        "/v1/models/{model_id}",
        "getModel",
        "One served model by id (a 404 for any other id).",
        "openai",
        {200: json_of(shapes.ModelCard)},
        (404,),
        params=(Param("model_id", "path", {"type": "string", "minLength": 1}),),
    ),
    Operation(
        "get",
        "/healthz",
        "healthz",
        "The process is up.",
        "operations",
        {200: json_of(shapes.Health)},
        authenticated=False,
    ),
    Operation(
        "get",
        "/readyz",
        "readyz",
        "Ready when the database, Redis and a worker with its model answer.",
        "operations",
        {200: json_of(shapes.Readiness), 503: json_of(shapes.Readiness)},
        authenticated=False,
    ),
    Operation(
        "get",
        "/metrics",
        "metrics",
        "Prometheus metrics of this host's vlmq processes.",
        "operations",
        {200: text("text/plain")},
        authenticated=False,
    ),
    Operation(
        "get",
        "/",
        "playground",
        "The playground page.",
        "operations",
        {200: text("text/html")},
        authenticated=False,
    ),
)
# Routes that describe the API itself or serve its pages' assets, not part of it.
UNDOCUMENTED = re.compile(r"^/(openapi\.json|docs|static)|favicon|^/playground/")


def operation_object(operation: Operation) -> dict[str, Any]:
    """One operation of the document."""
    responses: dict[str, Any] = {}
    for status, answer_content in operation.answers.items():
        answer: dict[str, Any] = {
            "description": "OK" if status < 300 else "Not ready",
            "content": answer_content,
        }
        if operation.links and status < 300:
            answer["links"] = operation.links
        if operation.headers and status < 300:
            answer["headers"] = operation.headers
        responses[str(status)] = answer
    errors = (*operation.errors, *(AUTHENTICATED if operation.authenticated else ()))
    for status in sorted(set(errors)):
        responses[str(status)] = {
            "description": ERROR_MEANINGS[status],
            "content": json_of(shapes.ErrorResponse),
        }
    value: dict[str, Any] = {
        "operationId": operation.operation_id,
        "summary": operation.summary,
        "tags": [operation.tag],
        "responses": responses,
    }
    if operation.params:
        value["parameters"] = [param.to_openapi() for param in operation.params]
    content: dict[str, Any] = {}
    if operation.body is not None:
        content.update(json_of(operation.body))
    if operation.multipart is not None:
        content["multipart/form-data"] = {"schema": operation.multipart}
    if content:
        value["requestBody"] = {"required": True, "content": content}
    if not operation.authenticated:
        value["security"] = []
    return value


def components() -> dict[str, Any]:
    """Every request and response model as a component schema."""
    entries: list[tuple[type[BaseModel], Any]] = [
        *((model, "validation") for model in REQUEST_MODELS),
        *((model, "serialization") for model in shapes.RESPONSE_MODELS),
    ]
    _, definitions = models_json_schema(entries, ref_template=REF)
    return dict(definitions.get("$defs", {}))


def build_document(version: str) -> dict[str, Any]:
    """The whole OpenAPI 3.1 document."""
    paths: dict[str, dict[str, Any]] = {}
    for operation in OPERATIONS:
        paths.setdefault(operation.path, {})[operation.method] = operation_object(operation)
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
            "schemas": components(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def flask_routes(app: Flask) -> set[tuple[str, str]]:
    """Every (method, OpenAPI path) the app serves, its own documentation aside."""
    routes = set()
    for rule in app.url_map.iter_rules():
        if UNDOCUMENTED.search(rule.rule):
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        for method in rule.methods or ():
            if method not in ("HEAD", "OPTIONS"):
                routes.add((method.lower(), path))
    return routes


def undocumented_routes(app: Flask) -> set[tuple[str, str]]:
    """Routes of the app that no `Operation` declares (the tests want none)."""
    return flask_routes(app) - {(op.method, op.path) for op in OPERATIONS}
