"""The OpenAPI document is built from the route table and refuses to disagree with it."""

from __future__ import annotations

import openapi
import pytest
from campaigns_api import ALIAS, VIEWS, AdminApi, routed_operations

ROUTES = tuple(routed_operations())


def test_every_route_has_one_operation_and_the_old_spelling_is_deprecated() -> None:
    doc = openapi.document("/admin", ROUTES, ALIAS)
    operations = [(path, method) for path, ops in doc["paths"].items() for method in ops]
    assert len(operations) == len(ROUTES)
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    assert doc["paths"]["/campains/{id}"]["put"]["deprecated"] is True
    assert "deprecated" not in doc["paths"]["/campaigns/{id}"]["put"]
    assert "content" not in doc["paths"]["/campaigns"]["head"]["responses"]["200"]


def test_a_route_without_an_operation_is_an_error() -> None:
    with pytest.raises(LookupError, match="no OpenAPI operation for PATCH /campaigns/{id}"):
        openapi.document("/admin", (*ROUTES, ("/campaigns/{id}", "PATCH", "campaign")), ALIAS)


def test_an_operation_without_a_route_is_an_error() -> None:
    without_stats = tuple(route for route in ROUTES if route[2] != "stats")
    with pytest.raises(LookupError, match="without a route"):
        openapi.document("/admin", without_stats, ALIAS)


def test_the_router_takes_exactly_the_documented_query_parameters() -> None:
    assert openapi.query_parameters("campaigns", "GET") == {"platforms", "status", "limit", "cursor", "format"}
    assert openapi.query_parameters("stats", "HEAD") == {"from", "to", "granularity", "tz", "format"}
    assert openapi.query_parameters("campaign", "DELETE") == frozenset()


def test_every_routed_method_has_a_view() -> None:
    answered = {(endpoint, "GET" if method == "HEAD" else method) for _, method, endpoint in ROUTES}
    assert answered == set(VIEWS)
    assert all(callable(getattr(AdminApi, name)) for name in VIEWS.values())


def test_every_lifecycle_field_and_counter_is_described() -> None:
    schemas = openapi.document("/admin", ROUTES, ALIAS)["components"]["schemas"]
    lifecycle = ("status", "starts_at", "ends_at", "max_clicks", "fallback_url")
    for name in lifecycle:
        for schema in ("NewCampaign", "CampaignChanges", "Campaign"):
            assert schemas[schema]["properties"][name]["description"], (schema, name)
        assert {"required": [name]} in schemas["CampaignChanges"]["anyOf"]  # a PUT may change it alone
    assert set(lifecycle) <= set(schemas["Campaign"]["required"])
    assert schemas["NewCampaign"]["required"] == ["redirect_url", "platforms"]  # every new field is optional
    assert schemas["NewCampaign"]["properties"]["status"]["enum"] == ["active", "paused", "archived"]
    for name in ("inactive_click_count", "android_inactive_click_count"):
        assert name in schemas["Totals"]["required"] and name in schemas["Bucket"]["required"]


def test_every_state_change_documents_what_browser_safety_and_the_body_limit_answer() -> None:
    doc = openapi.document("/admin", ROUTES, ALIAS)
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            statuses = set(operation["responses"])
            if method in ("post", "put", "delete"):
                assert {"403", "415"} <= statuses, (method, path)
                assert ("413" in statuses) == ("requestBody" in operation), (method, path)
            else:
                assert not {"403", "413", "415"} & statuses, (method, path)
