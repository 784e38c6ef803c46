"""Firestore's list prices, declared once for every figure of cost the benchmarks print.

Multi-region (nam5, eur3) prices in USD per 100,000 operations, as listed on
https://cloud.google.com/firestore/pricing; a regional database costs about half.
"""

from __future__ import annotations

USD_PER_100K_READS = 0.06
USD_PER_100K_WRITES = 0.18
USD_PER_100K_DELETES = 0.02


def usd_per_million_clicks(reads: int, writes: int, deletes: int, clicks: int) -> float:
    """What these operations cost for every million clicks they counted."""
    usd = (reads * USD_PER_100K_READS + writes * USD_PER_100K_WRITES + deletes * USD_PER_100K_DELETES) / 100_000
    return usd / clicks * 1_000_000 if clicks else 0.0
