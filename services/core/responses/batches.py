"""OpenAI's batch object, a page of batches, and a line of a batch's output or error file."""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy.orm import InstrumentedAttribute

from services.core.responses.base import OpenAIPage, ResponseModel, epoch_seconds
from services.core.responses.chat import ChatCompletionResponse
from services.core.responses.errors import ErrorResponse
from services.core.responses.moderations import ModerationResponse
from services.core.responses.responses_api import ResponseObject
from services.core.tables import Batch, Job, JobStatus


class RequestCounts(ResponseModel):
    """How many lines of a batch there are, and how many ended."""

    total: int
    completed: int
    failed: int


class BatchResponse(ResponseModel):
    """OpenAI's batch object."""

    id: str
    object: Literal["batch"]
    endpoint: str
    errors: dict[str, Any] | None
    input_file_id: str
    completion_window: str
    status: str
    output_file_id: str | None
    error_file_id: str | None
    created_at: int
    in_progress_at: int | None
    expires_at: int | None
    finalizing_at: int | None
    completed_at: int | None
    failed_at: int | None
    expired_at: int | None
    cancelling_at: int | None
    cancelled_at: int | None
    request_counts: RequestCounts
    metadata: dict[str, str] | None

    @classmethod
    def of(cls, batch: Batch) -> BatchResponse:
        """The batch object of a batch."""
        return cls(
            id=batch.id,
            object="batch",
            endpoint=batch.endpoint,
            errors=batch.errors,
            input_file_id=batch.input_file_id,
            completion_window=batch.completion_window,
            status=batch.status,
            output_file_id=batch.output_file_id,
            error_file_id=batch.error_file_id,
            created_at=epoch_seconds(batch.created_at) or 0,
            in_progress_at=epoch_seconds(batch.in_progress_at),
            expires_at=epoch_seconds(batch.expires_at),
            finalizing_at=epoch_seconds(batch.finalizing_at),
            completed_at=epoch_seconds(batch.completed_at),
            failed_at=epoch_seconds(batch.failed_at),
            expired_at=epoch_seconds(batch.expired_at),
            cancelling_at=epoch_seconds(batch.cancelling_at),
            cancelled_at=epoch_seconds(batch.cancelled_at),
            request_counts=RequestCounts(
                total=batch.total, completed=batch.completed, failed=batch.failed
            ),
            metadata=batch.metadata_ or None,
        )


class BatchListResponse(OpenAIPage):
    """A page of batches, newest first."""

    data: list[BatchResponse]

    @classmethod
    def of(cls, batches: list[Batch], has_more: bool) -> BatchListResponse:
        """A page of batches."""
        data = [BatchResponse.of(batch) for batch in batches]
        return cls(data=data, **cls.page_fields([b.id for b in batches], has_more))


class LineResponse(ResponseModel):
    """What the line's endpoint answered: its status and its body."""

    status_code: int
    request_id: str
    body: dict[str, Any]


class LineError(ResponseModel):
    """Why a line got no answer at all (it failed in the model, expired or was cancelled)."""

    code: str
    message: str


class BatchResultLine(ResponseModel):
    """One line of a batch's output or error file, in OpenAI's batch output shape.

    A line its endpoint refused carries that refusal as the live endpoint answers it (the
    status and the one error body), as OpenAI's error files do; `error` is for lines that
    never got an answer.
    """

    id: str
    custom_id: str | None
    response: LineResponse | None
    error: LineError | None

    @staticmethod
    def columns(endpoint: str) -> tuple[InstrumentedAttribute[Any], ...]:
        """The job columns `of` reads for a line of a batch to `endpoint`: the only ones a
        batch's result files load (a file is written from up to `max_batch_lines` rows, and
        loading every column, its JSON decoded, was most of the time a batch took to
        finalize)."""
        common = (Job.id, Job.status, Job.error, Job.custom_id, Job.model, Job.result)
        if endpoint == "/v1/moderations":
            return (*common, Job.moderation)
        answered = (Job.output, Job.created_at, Job.cache_hit, Job.metrics)
        if endpoint == "/v1/responses":
            return (*common, *answered, Job.response, Job.params, Job.completed_at, Job.metadata_)
        return (*common, *answered)

    @classmethod
    def of(cls, batch: Batch, job: Job) -> BatchResultLine:
        """The result line of one of the batch's jobs."""
        line_id = "batch_req_" + job.id.removeprefix("job_")
        response: LineResponse | None = None
        error: LineError | None = None
        if job.status == JobStatus.SUCCEEDED.value:
            if batch.endpoint == "/v1/moderations":
                body = ModerationResponse.of([job]).dump()
            elif batch.endpoint == "/v1/responses":
                body = ResponseObject.of(job).dump()
            else:
                body = ChatCompletionResponse.of(job).dump()
            response = LineResponse(status_code=200, request_id=job.id, body=body)
        elif job.error and "status" in job.error:
            body = ErrorResponse.build(
                job.error.get("error_type", "invalid_request_error"),
                job.error["type"],
                job.error.get("message", ""),
                job.error.get("param"),
            ).dump()
            response = LineResponse(status_code=job.error["status"], request_id=job.id, body=body)
        else:
            failure = job.error or {"type": job.status, "message": f"the request was {job.status}"}
            error = LineError(
                code=failure.get("type", job.status), message=failure.get("message", "")
            )
        return cls(id=line_id, custom_id=job.custom_id, response=response, error=error)
