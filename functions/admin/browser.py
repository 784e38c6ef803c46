"""What keeps a browser that is logged in to the admin from being used against it.

A browser adds the admin's basic-auth credentials to requests to the admin whichever page makes
them, so without these rules a page from anywhere could make a logged-in browser create, change
or delete campaigns, with requests the browser sends without asking the server first: a form
(``enctype="text/plain"`` carries a body that parses as JSON), ``fetch`` in ``no-cors`` mode,
``navigator.sendBeacon``. So:

- a state change (any method but GET, HEAD and OPTIONS) answers ``403`` when the browser says it
  comes from another site or origin (``Sec-Fetch-Site`` other than ``same-origin`` or ``none``)
  or its ``Origin`` is not the admin's own; this is decided before the credentials are looked at.
  Clients other than browsers send neither header and are not affected;
- a POST or PUT must declare ``Content-Type: application/json``, and a DELETE, which takes no
  body, no other type (``415``): no form can send that type, and a page that sets it on ``fetch``
  makes the browser ask first (a CORS preflight), which the admin never allows;
- every answer says it must not be framed, sniffed, read by other origins' pages or named in a
  ``Referer``, and the dashboard's page may load nothing from anywhere else
  (:func:`with_security_headers`).
"""

from __future__ import annotations

import functools
from urllib.parse import urlsplit

import flask

from shared.errors import Forbidden, UnsupportedMediaType
from shared.http import Handler

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Sec-Fetch-Site: the request came from the admin's own page, or from the user (a typed URL, a bookmark).
OWN_FETCH_SITES = frozenset({"same-origin", "none"})
JSON = "application/json"
DEFAULT_PORTS = {"http": 80, "https": 443}

# The dashboard: its own files only (its favicon is an empty data: URL), never in a frame.
DASHBOARD_POLICY = ("default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                    "form-action 'self'; frame-ancestors 'none'")
# Everything else is data: a browser that opens it runs and loads nothing, and never frames it.
DATA_POLICY = "default-src 'none'; frame-ancestors 'none'"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def refuse_other_origins(request: flask.Request) -> None:
    """A state change that a browser made for a page of another site or origin is refused (403)."""
    if request.method in SAFE_METHODS:
        return
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site.strip().lower() not in OWN_FETCH_SITES:
        raise Forbidden(f"refused: the browser sent this for a page of another site or origin "
                        f"(Sec-Fetch-Site: {fetch_site[:32]}); only the admin's own pages may change anything")
    origin = request.headers.get("Origin")
    if origin is not None:
        own = own_origin(request)
        if own is None or normalized_origin(origin) != own:
            raise Forbidden(f"refused: the browser sent this for a page of {origin[:100]!r}, not of "
                            f"{own or request.host[:100]!r}; only the admin's own pages may change anything")


def require_json(request: flask.Request) -> None:
    """POST and PUT declare a JSON body; a DELETE declares nothing else (415)."""
    if request.method in SAFE_METHODS:
        return
    given = request.headers.get("Content-Type")
    if given is None:
        if request.method == "DELETE":
            return
        raise UnsupportedMediaType(f"Content-Type must be {JSON}; none was given")
    if request.mimetype != JSON:
        raise UnsupportedMediaType(f"Content-Type must be {JSON}, got {given[:100]!r}")
    charset = request.mimetype_params.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise UnsupportedMediaType(f"JSON must be UTF-8, got charset={charset[:32]!r}")


def own_origin(request: flask.Request) -> str | None:
    """The origin a browser gives the admin's own pages: the scheme and ``Host`` of this request.

    The scheme is ``X-Forwarded-Proto``'s when there is one: Cloud Run ends TLS in front of the
    instance, which sees plain HTTP, and says ``https`` there. A page cannot set that header on a
    request its browser sends without asking first, so it cannot make its own origin pass.
    """
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return _origin(forwarded or request.scheme, request.host)


def normalized_origin(origin: str) -> str | None:
    """``scheme://host[:port]`` with the default port left out, or None for anything else (``null``)."""
    parts = urlsplit(origin.strip())
    if parts.path or parts.query or parts.fragment or parts.username is not None:
        return None
    return _origin(parts.scheme, parts.netloc)


def _origin(scheme: str, netloc: str) -> str | None:
    scheme = scheme.lower()
    if scheme not in DEFAULT_PORTS or not netloc or any(c in netloc for c in "/?#@\\ "):
        return None
    try:
        parts = urlsplit(f"{scheme}://{netloc}")
        host, port = parts.hostname, parts.port
    except ValueError:  # a port that is not a number, or out of range
        return None
    if not host:
        return None
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}" + ("" if port in (None, DEFAULT_PORTS[scheme]) else f":{port}")


def secure(response: flask.Response) -> flask.Response:
    """The headers every admin answer carries, whoever made it."""
    policy = DASHBOARD_POLICY if response.mimetype == "text/html" else DATA_POLICY
    response.headers["Content-Security-Policy"] = policy
    response.headers.update(SECURITY_HEADERS)
    return response


def with_security_headers(handler: Handler) -> Handler:
    @functools.wraps(handler)
    def wrapper(request: flask.Request) -> flask.Response:
        return secure(handler(request))

    return wrapper
