"""A circuit breaker shared by every worker, kept in the cache (Redis in production).

After ``threshold`` consecutive failures the circuit opens for ``reset_after``
seconds: calls fail fast instead of piling up on a core that is down. The
first call after that is a trial: a success closes the circuit, a failure
opens it again. Counting is approximate across processes (read, then write),
which only shifts the opening by a call or two.
"""

import time

from django.core.cache import cache


class CircuitBreaker:
    def __init__(self, *, name: str, threshold: int, reset_after: float) -> None:
        self.key = f"circuit:{name}"
        self.threshold = max(1, threshold)
        self.reset_after = reset_after

    def _state(self) -> dict:
        return cache.get(self.key) or {"failures": 0, "open_until": 0.0}

    def is_open(self) -> bool:
        """True while calls must fail fast."""
        return self._state()["open_until"] > time.time()

    def record_success(self) -> None:
        if self._state()["failures"]:
            cache.delete(self.key)

    def record_failure(self) -> None:
        state = self._state()
        state["failures"] += 1
        if state["failures"] >= self.threshold:
            state["open_until"] = time.time() + self.reset_after
        # Kept a day: a circuit left alone does not count failures forever.
        cache.set(self.key, state, timeout=86400)

    def reset(self) -> None:
        cache.delete(self.key)
