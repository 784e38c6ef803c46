"""Who is asking: the client's address, as the admin's login limiter and the track function's visitor keys see it."""

from __future__ import annotations


def client_address(forwarded_for: str, peer: str | None, *, behind_google_front_end: bool) -> str:
    """The address Google's front end saw on Cloud Run, else the peer's.

    On Cloud Run every request reaches the instance through Google's front
    end, so the peer address is the front end's own and the same for all
    clients. The front end appends the address the connection came from to
    ``X-Forwarded-For`` (``forwarded_for``), after whatever the client sent in
    that header, so only its last hop is not the client's to choose. Elsewhere
    (./run.sh, tests) nothing sets the header but the client itself, so it is
    not trusted.
    """
    if behind_google_front_end:
        last_hop = forwarded_for.rsplit(",", 1)[-1].strip()
        if last_hop:
            return last_hop
    return peer or "unknown"
