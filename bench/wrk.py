"""wrk, the HTTP load generator, as the benchmarks drive it: one Lua script, one typed result.

:func:`run_wrk` sends GETs round-robin over a list of paths (each wrk thread
starting at its own offset), counts the 307s whose Location is one of the
wanted URLs, and reads wrk's figures from the one JSON line the script's
``done()`` hook prints. The paths are written into the script, so anything
random about them (ids that name no campaign, say) is drawn in Python.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

WRK_MISSING = """\
error: wrk, the HTTP load generator, is not on PATH. Install it with
    sudo apt-get install wrk        (Debian/Ubuntu)
    brew install wrk                (macOS)
and run again."""
RESULT_PREFIX = "wrk-result "

# request() takes the thread's next path, response() counts 307s to a wanted
# Location, done() prints one JSON line (times in microseconds).
SCRIPT = """\
local paths = {
%(paths)s
}
local wanted = {}
for _, location in ipairs({%(locations)s}) do wanted[location] = true end
local thread_count = %(threads)d
local threads = {}
%(headers)s
function setup(thread)
  table.insert(threads, thread)
  thread:set("offset", math.floor((#threads - 1) * #paths / thread_count))
end

function init(args)
  ok = 0
  turn = offset
end

function request()
  turn = turn %% #paths + 1
  return wrk.format("GET", paths[turn])
end

function response(status, headers, body)
  local location = headers["Location"] or headers["location"]
  if status == 307 and location and wanted[location] then
    ok = ok + 1
  end
end

function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do
    total = total + thread:get("ok")
  end
  local e = summary.errors
  io.write(string.format(
    '%(prefix)s{"requests":%%d,"duration_us":%%d,"ok":%%d,"errors":%%d,"p50_us":%%d,"p99_us":%%d}\\n',
    summary.requests, summary.duration, total, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    ok: int  # 307s whose Location is one of the wanted
    errors: int  # connect, read, write, timeout and non-2xx/3xx status errors
    duration_s: float
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0


def available() -> bool:
    return shutil.which("wrk") is not None


def wrk_check() -> None:
    """Exit with an install hint when wrk is not on PATH."""
    if not available():
        print(WRK_MISSING, file=sys.stderr)
        sys.exit(2)


def _lua_string(text: str) -> str:
    if not text.isascii() or not text.isprintable():
        raise ValueError(f"not printable ASCII: {text!r}")
    return json.dumps(text)  # a printable ASCII JSON string is a Lua string


def write_script(
    path: Path, paths: Sequence[str], wanted_locations: Collection[str], threads: int,
    headers: Mapping[str, str] | None = None,
) -> Path:
    if not paths:
        raise ValueError("no paths to request")
    path.write_text(SCRIPT % {
        "paths": ",\n".join(_lua_string(p) for p in paths),
        "locations": ", ".join(_lua_string(location) for location in sorted(wanted_locations)),
        "threads": threads,
        "headers": "".join(f"wrk.headers[{_lua_string(name)}] = {_lua_string(value)}\n"
                           for name, value in (headers or {}).items()),
        "prefix": RESULT_PREFIX,
    })
    return path


def run_wrk(
    port: int, paths: Sequence[str], wanted_locations: Collection[str], connections: int, seconds: float,
    workdir: Path, timeout_s: float = 10, *, threads: int | None = None, headers: Mapping[str, str] | None = None,
) -> WrkResult:
    """Load http://127.0.0.1:port for ``seconds`` with ``connections`` connections over ``threads`` threads.

    ``threads`` defaults to one per CPU, at most one per connection; ``timeout_s``
    is wrk's per-request timeout. Raises RuntimeError when wrk fails.
    """
    threads = threads or max(1, min(connections, os.cpu_count() or 1))
    script = write_script(workdir / "wrk.lua", paths, wanted_locations, threads, headers)
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", f"--timeout={timeout_s:g}s",
               "-s", str(script), f"http://127.0.0.1:{port}"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as wrk:
        try:
            out, err = wrk.communicate(timeout=seconds + 60)
        finally:
            if wrk.poll() is None:  # Ctrl-C or a hang: wrk must not outlive the bench
                wrk.kill()
                wrk.wait()
    line = next((line for line in out.splitlines() if line.startswith(RESULT_PREFIX)), None)
    if wrk.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({wrk.returncode}): {err.strip() or out.strip()}")
    data = json.loads(line[len(RESULT_PREFIX):])
    return WrkResult(data["requests"], data["ok"], data["errors"], data["duration_us"] / 1e6,
                     data["p50_us"] / 1000, data["p99_us"] / 1000)
