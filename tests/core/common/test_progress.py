"""Progress: the rate and ETA of a loop, with one-off work set aside."""

from __future__ import annotations

import re
import time

from sae_assets.core.common.progress import Progress


def _eta(message: str) -> float:
    match = re.search(r"ETA (\d+)s", message)
    assert match, message
    return float(match.group(1))


def test_set_aside_work_leaves_the_rate_and_eta_at_the_items_pace() -> None:
    progress = Progress("labels", 100, "features", None)
    progress.start = time.perf_counter() - 20.0  # 20 s in, 10 of 100 done
    progress.done = 10
    assert 178 <= _eta(progress.message()) <= 180  # 0.5 features/s
    progress.set_aside(10.0)  # half of it was a model's load: the items took 1 s each
    message = progress.message()
    assert 89 <= _eta(message) <= 90 and "1 features/s" in message and "elapsed 20s" in message
    progress.set_aside(-5.0)  # a negative duration is ignored
    assert progress.set_aside_s == 10.0
