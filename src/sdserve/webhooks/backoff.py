"""When to try a failed webhook again.

The Standard Webhooks recommended schedule (delay after the n-th failed try):
5s, 5m, 30m, 2h, 5h, 10h, 10h — eight tries over about 27 hours. Each delay is
spread by +-20% so that many deliveries that failed together (a receiver outage)
do not all come back in the same second.
"""

from __future__ import annotations

import random

SCHEDULE_SECONDS: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
JITTER = 0.2


def schedule(attempt: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed try number ``attempt`` (1 = the first try).
    Past the end of the schedule the last delay repeats."""
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    base = SCHEDULE_SECONDS[min(attempt, len(SCHEDULE_SECONDS)) - 1]
    uniform = rng.uniform if rng is not None else random.uniform
    spread = uniform(-JITTER, JITTER)
    return base * (1.0 + spread)
