"""Aggregate functions: count click events into per-platform counters, exactly once.

``aggregate_event`` is the Pub/Sub-triggered CloudEvent function;
``aggregate_http`` is the scheduled run of one partition, ``?partition=n`` (default 0), called by
Cloud Scheduler or ``/tasks/update_stats``: it drains the partition's backlog (unless
``AGGREGATE_MODE=event``) and applies its journal to the counts readers see; partition 0's also
sweeps deleted campaigns' counters.
"""
# ruff: noqa: E402  (the collector is tuned before the imports)

from shared.collector import collect_seldom, freeze_imports

collect_seldom()

import flask
import functions_framework
from aggregation import ScheduledRun, build_applier, build_scheduled_run, partition_asked, receive_pushed
from cloudevents.http import CloudEvent

from shared import config
from shared.clients import Lazy
from shared.counting import Journal
from shared.http import json_errors, json_response
from shared.logs import bind_request
from shared.shard_guard import guard_counter_shards

freeze_imports()

settings = config.load(config.PROJECT)
guard_counter_shards(settings)
applier = Lazy(lambda: build_applier(settings))


def _scheduled_run(partition: int) -> Lazy[ScheduledRun]:
    return Lazy(lambda: build_scheduled_run(settings, applier.get(), partition))


scheduled = [_scheduled_run(partition) for partition in range(settings.aggregate_partitions)]


@functions_framework.cloud_event
def aggregate_event(cloud_event: CloudEvent) -> None:
    receive_pushed(Journal(applier.get().db), applier.get(), cloud_event.data)


@functions_framework.http
@json_errors
def aggregate_http(request: flask.Request) -> flask.Response:
    bind_request(request.headers, settings.project)
    report = scheduled[partition_asked(request.args.get("partition", "0"), len(scheduled))].get().run()
    if report.failed:
        return json_response({"status": "error", "msg": "some events left for redelivery", **report.summary()}, 503)
    return json_response({"status": "Updated", **report.summary()})
