"""LLM answers kept by (model, prompt), so that repeated comparisons do not pay twice."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

log = logging.getLogger(__name__)


class JudgementCache:
    """LLM answers keyed by (model, prompt), in memory and optionally in a JSON-lines file,
    so repeated comparisons do not pay twice."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else None
        self._answers: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        self._unterminated = False
        if self.path and self.path.exists():
            self._load(self.path)

    def _load(self, path: Path) -> None:
        """Every whole line; a line cut short by a crash mid-write is skipped (and warned about)."""
        text = path.read_text(encoding="utf-8")
        self._unterminated = bool(text) and not text.endswith("\n")
        skipped = 0
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                self._answers[(row["model"], row["prompt"])] = row["answer"]
            except (json.JSONDecodeError, KeyError, TypeError):
                skipped += 1
        if skipped:
            log.warning("judgement cache %s: skipped %d damaged line(s) (a write cut short?)", path, skipped)

    def get(self, model: str, prompt: str) -> str | None:
        return self._answers.get((model, prompt))

    def put(self, model: str, prompt: str, answer: str) -> None:
        with self._lock:
            self._answers[(model, prompt)] = answer
            if self.path:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                line = json.dumps({"model": model, "prompt": prompt, "answer": answer}) + "\n"
                with self.path.open("a", encoding="utf-8") as handle:
                    # after a half-written last line, start a new line rather than extend the damage
                    handle.write(("\n" if self._unterminated else "") + line)
                self._unterminated = False

    def __len__(self) -> int:
        return len(self._answers)
