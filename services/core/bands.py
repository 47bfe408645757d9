"""Priority bands: the order in which queued model work is served.

Bands are served strictly, highest first, with one exception: batch lines, in the lowest
band, keep a guaranteed share of the model's tokens (`Settings.batch_min_share`), so steady
interactive load slows a batch down but never stops it. Within a band, tenants share the
model fairly (`services.core.fair_queue`).

A request picks its band with OpenAI's `service_tier` or vLLM's integer `priority`
(lower runs sooner, 0 is the default).
"""

from __future__ import annotations

from enum import IntEnum


class Band(IntEnum):
    """A priority band; a lower value is served first."""

    PRIORITY = 0
    DEFAULT = 1
    FLEX = 2
    BATCH = 3

    @property
    def label(self) -> str:
        """The band's name as the API shows it (OpenAI's `service_tier` names)."""
        return self.name.lower()


SERVICE_TIERS = {"priority": Band.PRIORITY, "default": Band.DEFAULT, "auto": Band.DEFAULT}
SERVICE_TIERS["flex"] = Band.FLEX


def band_of(service_tier: str | None, priority: int | None) -> Band:
    """The band of an interactive request: `service_tier` if given, else vLLM's `priority`
    (below 0: priority, 0: default, above 0: flex)."""
    if service_tier is not None:
        return SERVICE_TIERS[service_tier]
    if priority is None or priority == 0:
        return Band.DEFAULT
    return Band.PRIORITY if priority < 0 else Band.FLEX
