"""What log correlation costs a click: the per-request hook, and a log line with and without it.

    python -m bench.logs [--rounds 7]

Every click pays :func:`shared.logs.bind_request` (one context variable set);
only a click that logs (a failed publish, say) pays for the correlation fields.
Both are timed in-process, in CPU time (what a busy machine's other work
does not inflate), beside what they add to: an empty function call, and the
same ERROR line formatted without correlation. The cases take turns round
after round, and each figure is its best round.
Ends with ``logs: bind_ns=… call_ns=… line_plain_us=… line_correlated_us=…``.
"""

from __future__ import annotations

import argparse
import io
import logging
import time
import timeit
from collections.abc import Callable

from functions_framework.execution_id import ExecutionContext, execution_context_var
from werkzeug.datastructures import EnvironHeaders

from shared import logs

EVENT = {"click_id": "0" * 32, "campaign_id": 5928566696968192, "platform": "Android",
         "ts": "2026-11-29T12:00:00.000000Z", "user_agent": "Mozilla/5.0 (Linux; Android 14)", "referrer": "",
         "bot": False}
ENVIRON = {
    "REQUEST_METHOD": "GET", "PATH_INFO": "/track/5928566696968192", "QUERY_STRING": "platform=Android",
    "HTTP_USER_AGENT": EVENT["user_agent"], "HTTP_FUNCTION_EXECUTION_ID": "a1B2c3D4e5F6",
    "HTTP_TRACEPARENT": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "HTTP_X_CLOUD_TRACE_CONTEXT": "4bf92f3577b34da6a3ce929d0e0e4736/67667974448284343;o=1",
}


def best_ns(cases: dict[str, Callable[[], object]], number: int, rounds: int) -> dict[str, float]:
    """Nanoseconds per call of each case, in its best round; the cases take turns each round."""
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(rounds):
        for name, action in cases.items():
            elapsed = timeit.Timer(action, timer=time.process_time).timeit(number)
            best[name] = min(best[name], elapsed / number * 1e9)
    return best


def logger(name: str, correlated: bool) -> logging.Logger:
    """An ERROR-level logger writing JSON lines to memory, with or without the correlation filter."""
    result = logs.get_logger(name) if correlated else logging.getLogger(f"bench.{name}")
    if not correlated:
        result.filters.clear()
    result.propagate = False
    result.handlers.clear()
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(logs.JsonFormatter())
    result.addHandler(handler)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=51)
    args = parser.parse_args()

    headers = EnvironHeaders(ENVIRON)
    per_click = best_ns({"call": lambda: None, "bind": lambda: logs.bind_request(headers, "my-project")},
                        20_000, args.rounds)
    call_ns, bind_ns = per_click["call"], per_click["bind"]

    # As while serving a request: functions-framework's context and ours both set.
    execution_context_var.set(ExecutionContext("a1B2c3D4e5F6", None))  # type: ignore[arg-type]  # typed as None only
    logs.bind_request(headers, "my-project")
    plain, correlated = logger("plain", correlated=False), logger("correlated", correlated=True)

    def line(log: logging.Logger) -> Callable[[], None]:
        return lambda: log.error("click event not published", extra={"event": EVENT, "error": "NotFound()"})

    per_line = best_ns({"plain": line(plain), "correlated": line(correlated)}, 2_000, args.rounds)
    plain_us, correlated_us = per_line["plain"] / 1000, per_line["correlated"] / 1000

    print(f"{'per click':<32}{'ns':>10}")
    print(f"{'  empty function call':<32}{call_ns:>10.0f}")
    print(f"{'  bind_request (the hook)':<32}{bind_ns:>10.0f}")
    print(f"{'per ERROR line':<32}{'µs':>10}")
    print(f"{'  without correlation':<32}{plain_us:>10.2f}")
    print(f"{'  with trace and execution id':<32}{correlated_us:>10.2f}")
    print(f"logs: bind_ns={bind_ns:.0f} call_ns={call_ns:.0f} "
          f"line_plain_us={plain_us:.2f} line_correlated_us={correlated_us:.2f}")


if __name__ == "__main__":
    main()
