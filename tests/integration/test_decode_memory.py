"""Large images cost the API bounded memory: an image larger than the model needs is decoded
once to be downscaled, within the process's decode budget, however many arrive at once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

from services.core.config import Settings
from tests.faults.stack import report
from tests.support import REPO_ROOT, settings_env
from vlmq.cli import create_key

MIB = 1 << 20


def test_eight_6000_pixel_pngs_at_once_cost_the_api_under_256_mib(
    settings: Settings, tmp_path: Path
) -> None:
    # An 11 KB 1-bit PNG and a small RGB one, both 6000x6000: whole, they decode to 36 to
    # 180 MB each.
    files = []
    for index, mode in enumerate(["1", "RGB"] * 4):
        path = tmp_path / f"large-{index}.png"
        Image.new(mode, (6000, 6000), 1 if mode == "1" else (index, 90, 200)).save(path)
        files.append(str(path))
    key = create_key(settings, "decode-probe", "tests")
    probe = subprocess.run(
        [sys.executable, "-m", "tests.decode_probe", *files],
        cwd=REPO_ROOT,
        env=settings_env(settings),
        input=key,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    measured = json.loads(probe.stdout.strip().splitlines()[-1])
    report(
        "decode_memory",
        pngs="8 of 6000x6000 (1-bit and RGB)",
        peak_growth_mib=round(measured["growth_bytes"] / MIB),
    )
    assert measured["statuses"] == [202] * 8
    assert measured["growth_bytes"] < 256 * MIB
