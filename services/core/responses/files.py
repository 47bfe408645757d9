"""OpenAI's file object, a page of files, and a deleted file."""

from __future__ import annotations

from typing import Literal

from services.core.responses.base import OpenAIPage, ResponseModel, epoch_seconds
from services.core.tables import File


class FileResponse(ResponseModel):
    """OpenAI's file object."""

    id: str
    object: Literal["file"]
    bytes: int
    created_at: int
    expires_at: int | None
    filename: str
    purpose: str
    status: str
    status_details: str | None = None

    @classmethod
    def of(cls, file: File) -> FileResponse:
        """The file object of a stored file."""
        return cls(
            id=file.id,
            object="file",
            bytes=file.bytes,
            created_at=epoch_seconds(file.created_at) or 0,
            expires_at=epoch_seconds(file.expires_at),
            filename=file.filename,
            purpose=file.purpose,
            status="processed",
            status_details=None,
        )


class FileListResponse(OpenAIPage):
    """A page of files, newest first."""

    data: list[FileResponse]

    @classmethod
    def of(cls, files: list[File], has_more: bool) -> FileListResponse:
        """A page of files."""
        data = [FileResponse.of(file) for file in files]
        return cls(data=data, **cls.page_fields([f.id for f in files], has_more))


class FileDeletedResponse(ResponseModel):
    """A deleted file."""

    id: str
    object: Literal["file"]
    deleted: bool

    @classmethod
    def of(cls, file: File) -> FileDeletedResponse:
        """The answer to deleting `file`."""
        return cls(id=file.id, object="file", deleted=True)
