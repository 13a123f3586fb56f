"""The price in force for a call: (provider, model, time) -> ModelPrice, from a small cache.

Prices change rarely and calls arrive by the thousand, so each process keeps the table
in memory and re-reads it at most every PRICE_CACHE_S seconds (an edit in the admin is
used within that time). Lookup: the exact provider and model first, then the model from
any provider (blank provider), each by the longest name that the call's model starts
with (gpt-4o-2024-08-06 is priced as gpt-4o), then the row with the latest valid_from
not after the call.
"""

from __future__ import annotations

import bisect
import threading
import time
from datetime import datetime

from apps.metrics.models import ModelPrice

PRICE_CACHE_S = 30.0

_lock = threading.Lock()
_cache: dict = {"at": -1e9, "table": {}}


def _table() -> dict[tuple[str, str], tuple[list[datetime], list[ModelPrice]]]:
    with _lock:
        if time.monotonic() - _cache["at"] > PRICE_CACHE_S:
            table: dict = {}
            for price in ModelPrice.objects.order_by("valid_from"):
                starts, rows = table.setdefault((price.provider.lower(), price.model.lower()), ([], []))
                starts.append(price.valid_from)
                rows.append(price)
            _cache.update(at=time.monotonic(), table=table)
        return _cache["table"]


def prices_forget() -> None:
    """Drop this process's cache (after an edit, and in tests)."""
    with _lock:
        _cache["at"] = -1e9


def price_for(*, provider: str, model: str, at: datetime) -> ModelPrice | None:
    """The ModelPrice in force for one call, or None."""
    entry = Pricer()._rows_for(provider, model)
    if not entry:
        return None
    i = bisect.bisect_right(entry[0], at) - 1
    return entry[1][i] if i >= 0 else None


class Pricer:
    """Prices many calls at once: one cache read, one lookup per distinct model."""

    def __init__(self):
        self.table = _table()
        self.memo: dict = {}

    def cost(self, call: dict) -> tuple[float | None, str]:
        """(cost in USD, source): 'agent' if sent, 'price' if computed, 'unpriced'."""
        if call.get("cost_usd") is not None:
            return call["cost_usd"], "agent"
        key = (call["provider"], call["model"])
        entry = self.memo.get(key)
        if entry is None:
            entry = self.memo[key] = self._rows_for(*key)
        if not entry:
            return None, "unpriced"
        starts, rows = entry
        i = bisect.bisect_right(starts, call["ts"]) - 1
        if i < 0:
            return None, "unpriced"
        return rows[i].cost_usd(
            tokens_in=call.get("tokens_in", 0), tokens_out=call.get("tokens_out", 0),
            tokens_cached=call.get("tokens_cached", 0),
        ), "price"

    def _rows_for(self, provider, model):
        provider, model = provider.lower(), model.lower()
        for who in (provider, ""):
            best = None
            for (p, m), entry in self.table.items():
                if p == who and (model == m or model.startswith(m + "-") or model.startswith(m + ":")):
                    if best is None or len(m) > len(best[0]):
                        best = (m, entry)
            if best is not None:
                return best[1]
        return None
