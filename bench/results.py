"""Merge flat benchmark figures into bench/results.json (one key per figure)."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results.json"


def merge_results(figures: dict[str, float | int | str], path: Path = RESULTS) -> dict:
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(figures)
    path.write_text(json.dumps(dict(sorted(data.items())), indent=2) + "\n")
    return data
