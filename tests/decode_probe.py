"""The API's peak memory while it takes requests that carry large images, in a process of
its own (so that its peak resident size is the API's alone).

    python -m tests.decode_probe IMAGE_FILE... < api_key

Settings come from the environment (`tests.support.settings_env`). Each image file is sent
by its own thread, at once, as a data URL in `POST /v1/jobs`; prints one JSON line:
the statuses and how far the process's resident size rose over its size before.
"""

from __future__ import annotations

import base64
import io
import json
import sys
import threading
import time
from pathlib import Path

import psutil
from PIL import Image

from services.api import create_app


def main() -> None:
    key = sys.stdin.read().strip()
    app = create_app()
    headers = {"Authorization": f"Bearer {key}"}
    bodies = [
        {
            "image": "data:image/png;base64," + base64.b64encode(Path(name).read_bytes()).decode(),
            "question": "what color is the shape?",
        }
        for name in sys.argv[1:]
    ]
    # Warm up: the first request loads what every request needs (tokenizer, connections).
    app.test_client().post("/v1/jobs", json=bodies[0] | {"image": small_png()}, headers=headers)
    # The size now, not the peak so far: a peak from start-up would hide the decodes'.
    before = psutil.Process().memory_info().rss
    statuses: list[int] = []
    start = threading.Barrier(len(bodies))

    def send(body: dict[str, str]) -> None:
        client = app.test_client()
        start.wait()
        statuses.append(client.post("/v1/jobs", json=body, headers=headers).status_code)

    threads = [threading.Thread(target=send, args=(body,)) for body in bodies]
    sampler = RssSampler()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    peak = sampler.stop()
    print(json.dumps({"statuses": sorted(statuses), "growth_bytes": peak - before}))


class RssSampler:
    """The process's resident size, sampled every millisecond from a thread of its own (the
    peak since start-up, `ru_maxrss`, would include the imports')."""

    def __init__(self) -> None:
        self.peak = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        process = psutil.Process()
        while not self.stopping.is_set():
            self.peak = max(self.peak, process.memory_info().rss)
            time.sleep(0.001)

    def stop(self) -> int:
        """Stop sampling; the largest size seen."""
        self.stopping.set()
        self.thread.join()
        return self.peak


def small_png() -> str:
    """A 2x2 PNG as a data URL."""
    buffer = io.BytesIO()
    Image.new("RGB", (2, 2), "red").save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


if __name__ == "__main__":
    main()
