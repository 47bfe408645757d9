"""gunicorn's own lines (workers booting, timeouts) in vlmq's log format.

`vlmq api` passes `--logger-class services.api.gunicorn_logging.VlmqGunicornLogger`: the
master and each worker send gunicorn's error log through the root logger, which
`configure_logging` formats like every other vlmq line. gunicorn's access log stays off:
the API writes its own access line per request, with the request id and tenant.
"""

from __future__ import annotations

from typing import Any

from gunicorn.glogging import Logger

from services.core.config import Settings
from services.core.logs import configure_logging


class VlmqGunicornLogger(Logger):  # type: ignore[misc]  # gunicorn ships no type hints
    """gunicorn's logger, handing its records to vlmq's handler."""

    def setup(self, cfg: Any) -> None:
        """Set gunicorn's levels, then replace its handlers by propagation to the root."""
        super().setup(cfg)
        configure_logging(Settings())
        for logger in (self.error_log, self.access_log):
            logger.handlers = []
            logger.propagate = True
        self.access_log.disabled = True
