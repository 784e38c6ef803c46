import base64

import flask
import pytest

from shared.errors import BadRequest, NotFound, PayloadTooLarge, Unauthorized
from shared.http import json_errors, read_json, require_basic_auth

app = flask.Flask(__name__)


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.mark.parametrize("headers", [
    {}, basic("admin", "wrong"), basic("Admin", "Secret"), basic("admin", "SECRET"), basic("", ""),
    {"Authorization": "Bearer Secret"}, {"Authorization": "Basic !!!"}, basic("admin", "Secret "),
])
def test_wrong_or_missing_credentials_are_refused(headers: dict[str, str]) -> None:
    with app.test_request_context(headers=headers), pytest.raises(Unauthorized):
        require_basic_auth(flask.request, "admin", "Secret")


def test_right_credentials_pass() -> None:
    with app.test_request_context(headers=basic("admin", "Secret:with:colons")):
        require_basic_auth(flask.request, "admin", "Secret:with:colons")


def test_json_bodies_are_bounded_and_parsed() -> None:
    with app.test_request_context(method="POST", data=b'{"a": 1}'):
        assert read_json(flask.request, 100) == {"a": 1}
    with app.test_request_context(method="POST", data=b"x" * 101), pytest.raises(PayloadTooLarge):
        read_json(flask.request, 100)
    with app.test_request_context(method="POST", data=b"{'a': 1}"), pytest.raises(BadRequest, match="malformed"):
        read_json(flask.request, 100)


def test_errors_map_to_json_and_surprises_to_a_generic_500(caplog: pytest.LogCaptureFixture) -> None:
    @json_errors
    def handler(request: flask.Request) -> flask.Response:
        if request.path == "/missing":
            raise NotFound("campaign 1 not found")
        raise KeyError("internal detail")

    with app.test_request_context("/missing"):
        answer = handler(flask.request)
        assert answer.status_code == 404
        assert answer.get_json() == {"status": "error", "msg": "campaign 1 not found"}
    with app.test_request_context("/boom"):
        answer = handler(flask.request)
        assert answer.status_code == 500
        assert "internal detail" not in answer.get_data(as_text=True)
    assert any("unhandled error" in r.getMessage() and r.exc_info for r in caplog.records)


@pytest.mark.parametrize("body, fragment", [
    (b"NaN", "NaN is not a JSON value"),
    (b'{"a": [1, -Infinity]}', "-Infinity is not a JSON value"),
    (b'{"a": {"b": Infinity}}', "Infinity is not a JSON value"),
    (b"[" * 33 + b"]" * 33, "nested deeper than 32 levels"),
    (b'{"a": ' * 33 + b"1" + b"}" * 33, "nested deeper than 32 levels"),
    (b"[" * 3000 + b"]" * 3000, "nested deeper than 32 levels"),  # past Python's recursion limit
    (b'["\\udc00"]', "lone surrogate"),
    (b'{"\\ud800x": 1}', "lone surrogate"),
])
def test_json_that_is_not_json_or_too_deep_is_refused(body: bytes, fragment: str) -> None:
    with app.test_request_context(method="POST", data=body), pytest.raises(BadRequest, match=fragment):
        read_json(flask.request, 100_000)


def test_json_within_the_limits_parses() -> None:
    body = b"[" * 32 + b'"\\ud83d\\ude00", 1e400' + b"]" * 32  # a surrogate pair is one character
    with app.test_request_context(method="POST", data=body):
        value = read_json(flask.request, 100_000)
    for _ in range(31):
        value = value[0]
    assert value[0] == "\U0001f600"


def test_framework_errors_become_the_json_error_with_their_headers() -> None:
    from werkzeug.exceptions import MethodNotAllowed as WerkzeugMethodNotAllowed
    from werkzeug.exceptions import NotFound as WerkzeugNotFound

    from shared.http import framework_error_response

    with app.test_request_context("/x"):
        answer = framework_error_response(WerkzeugNotFound())
        assert answer.status_code == 404 and answer.get_json()["status"] == "error"
        answer = framework_error_response(WerkzeugMethodNotAllowed(valid_methods=["GET", "HEAD"]))
        assert answer.status_code == 405 and answer.headers["Allow"] == "GET, HEAD"
        assert answer.mimetype == "application/json"
