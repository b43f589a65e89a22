"""The README's fenced code blocks, read as a newcomer runs them: each ``bash`` block's commands (comments dropped,
backslash continuations joined) and each ``python`` block's source, in the order the README gives them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

FENCE = re.compile(r"^```(?P<lang>[a-z]*)\n(?P<body>.*?)^```", re.S | re.M)
INLINE_COMMENT = re.compile(r"\s+#\s.*$")
"""A comment after a command (`` # `` with spaces around it: never inside the README's URLs or quoted text)."""
SERVERS = (re.compile(r"\bdagster dev\b"), re.compile(r"-m sae_assets\.viewer\b"))
"""Commands that start a server and keep running: the test starts them in the background."""


@dataclass(frozen=True)
class Block:
    """One fenced block: its language, its source, and the README line its fence opens on."""

    lang: str
    body: str
    line: int

    def commands(self) -> list[str]:
        """A bash block's commands: continuation lines joined, blank and comment-only lines dropped."""
        joined = re.sub(r"\\\n\s*", " ", self.body)
        lines = (INLINE_COMMENT.sub("", c).strip() for c in joined.splitlines() if not c.strip().startswith("#"))
        return [c for c in lines if c]

    @property
    def is_server(self) -> bool:
        return self.lang == "bash" and any(p.search(c) for c in self.commands() for p in SERVERS)

    @property
    def name(self) -> str:
        """A short id for test reports: the README line and the start of its first command."""
        first = self.commands()[0] if self.lang == "bash" else self.body.strip().splitlines()[0]
        return f"L{self.line}:{first[:40]}"


def readme_blocks(path: Path) -> list[Block]:
    text = path.read_text()
    return [Block(m["lang"], m["body"], text.count("\n", 0, m.start()) + 1) for m in FENCE.finditer(text)]


def with_port(command: str, default_port: int, port: int) -> str:
    """``command`` aimed at ``port`` instead of the README's ``default_port`` (a free port in tests)."""
    return command.replace(f"127.0.0.1:{default_port}", f"127.0.0.1:{port}")
