"""A bulk moderation batch on the bundled model: time, peak worker memory, and accuracy.

Builds a /v1/moderations batch file of easy-VQA images (test split first, then train;
mirrored copies after the originals, so every line is a new image and the cache cannot
answer), runs it through `vlmq up` with the policy {"triangle": "is there a triangle?"},
samples the worker's memory while it runs, and scores the flags against the images' true
shapes, for the test images (never seen in training) and for all lines. It also counts how
often the workers received each line's job (deliveries ÷ lines: 1.0 when no backlog is ever
re-sent) and samples the queue's length beside the batch's unfinished lines.

    .venv/bin/python -m bench.moderation_batch --lines 10000
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import redis
from PIL import Image

from bench.throughput import VlmqService
from services.core.config import BUNDLED_MODEL_DIR
from vlmq.client import api_request, download_file, upload_batch_file

POLICY = {"triangle": "is there a triangle?"}
# Interactive jobs are one task each; batch lines arrive in chunks, logged with their size.
RECEIVED = re.compile(r"Task vlmq\.infer\[job_\w+\] received|event=chunk_received lines=(\d+)")
# Mirroring keeps the shape (the model was trained with mirrored images; rotations would
# show it triangles pointing sideways, which easy-VQA never has).
VARIANTS = [None, Image.Transpose.FLIP_LEFT_RIGHT]


@dataclass(frozen=True)
class Truth:
    """What a line's image really shows, and where it came from."""

    shape: str
    split: str
    mirrored: bool


def labelled_images() -> list[tuple[Path, str, str]]:
    """Every easy-VQA image (test split first) with its shape, read off the shape questions."""
    from easy_vqa import (
        get_test_image_paths,
        get_test_questions,
        get_train_image_paths,
        get_train_questions,
    )

    found: list[tuple[Path, str, str]] = []
    for split, questions_of, paths_of in (
        ("test", get_test_questions, get_test_image_paths),
        ("train", get_train_questions, get_train_image_paths),
    ):
        questions, answers, image_ids = questions_of()
        paths = paths_of()
        shapes: dict[int, str] = {}
        for answer, image_id in zip(answers, image_ids, strict=True):
            if answer in ("circle", "rectangle", "triangle"):
                shapes[image_id] = answer
        found += [(Path(paths[i]), shape, split) for i, shape in sorted(shapes.items())]
    return found


def variant_png(path: Path, variant: Image.Transpose | None) -> bytes:
    image = Image.open(path).convert("RGB")
    if variant is not None:
        image = image.transpose(variant)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def build_file(lines: int, destination: Path) -> dict[str, Truth]:
    """Write the batch file; returns custom_id → what its image shows."""
    images = labelled_images()
    truth: dict[str, Truth] = {}
    with destination.open("w") as handle:
        for index in range(lines):
            path, shape, split = images[index % len(images)]
            variant = VARIANTS[(index // len(images)) % len(VARIANTS)]
            url = "data:image/png;base64," + base64.b64encode(variant_png(path, variant)).decode()
            custom_id = f"{split}-{path.stem}-{index}"
            body = {
                "input": [{"type": "image_url", "image_url": {"url": url}}],
                "categories": POLICY,
            }
            line = {
                "custom_id": custom_id,
                "method": "POST",
                "url": "/v1/moderations",
                "body": body,
            }
            handle.write(json.dumps(line) + "\n")
            truth[custom_id] = Truth(shape, split, variant is not None)
    return truth


def tree_rss(process: psutil.Process) -> dict[str, int]:
    """Resident memory of each process under `process`, by command."""
    found: dict[str, int] = {}
    for child in [process, *process.children(recursive=True)]:
        try:
            command = " ".join(child.cmdline()[-2:])
            found[command] = found.get(command, 0) + child.memory_info().rss
        except psutil.Error:
            continue
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--model", default=str(BUNDLED_MODEL_DIR))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        jsonl = tmp / "moderation.jsonl"
        truth = build_file(args.lines, jsonl)
        print(f"{args.lines} lines, {jsonl.stat().st_size / 1e6:.1f} MB")
        # INFO: the workers log each task they receive, which is what deliveries are counted from.
        service = VlmqService(args.model, tmp, max_batch=16, log_level="INFO")
        queue = redis.Redis(port=int(service.env["VLMQ_EMBEDDED_REDIS_PORT"]))
        over_unfinished = 0
        max_queue = 0
        try:
            key = service.new_key("bulk")
            started = time.perf_counter()
            file = upload_batch_file(service.base, key, jsonl.name, jsonl.read_bytes())
            batch = api_request(
                service.base,
                key,
                "POST",
                "/v1/batches",
                {"input_file_id": file["id"], "endpoint": "/v1/moderations"},
            )
            peak: dict[str, int] = {}
            root = psutil.Process(service.process.pid)
            while batch["status"] not in ("completed", "failed", "cancelled", "expired"):
                time.sleep(1.0)
                for command, rss in tree_rss(root).items():
                    peak[command] = max(peak.get(command, 0), rss)
                queued = sum(int(queue.llen(k)) for k in queue.scan_iter("vlmq.infer.*"))
                batch = api_request(service.base, key, "GET", f"/v1/batches/{batch['id']}")
                counts = batch["request_counts"]
                unfinished = (
                    (counts["total"] or args.lines) - counts["completed"] - counts["failed"]
                )
                max_queue = max(max_queue, queued)
                over_unfinished += queued > unfinished
            elapsed = time.perf_counter() - started
            log_text = (tmp / "vlmq.log").read_text(errors="replace")
            received = sum(int(m.group(1) or 1) for m in RECEIVED.finditer(log_text))
            output = tmp / "output.jsonl"
            download_file(service.base, key, batch["output_file_id"], str(output))
        finally:
            service.stop()
        scored: list[tuple[Truth, bool]] = []
        for raw in output.read_text().splitlines():
            line = json.loads(raw)
            flagged = line["response"]["body"]["results"][0]["categories"]["triangle"]
            scored.append((truth[line["custom_id"]], flagged))
    counts = batch["request_counts"]
    rate = counts["completed"] / elapsed
    print(f"batch {batch['status']}: {counts} in {elapsed:.1f} s ({rate:.1f} lines/s)")
    print(
        f"deliveries per line: {received / args.lines:.4f} ({received} line deliveries); "
        f"queue length at most {max_queue}, above the unfinished lines in {over_unfinished} samples"
    )
    groups = {
        "test images": lambda t: t.split == "test" and not t.mirrored,
        "test images, mirrored": lambda t: t.split == "test" and t.mirrored,
        "all lines": lambda t: True,
    }
    for name, chosen in groups.items():
        picked = [(t, flagged) for t, flagged in scored if chosen(t)]
        right = sum(flagged == (t.shape == "triangle") for t, flagged in picked)
        if picked:
            print(f"policy {POLICY}, {name}: {right / len(picked):.4f} ({right}/{len(picked)})")
    for command, rss in sorted(peak.items(), key=lambda item: -item[1]):
        print(f"peak RSS {rss / 2**20:8.1f} MiB  {command}")


if __name__ == "__main__":
    main()
