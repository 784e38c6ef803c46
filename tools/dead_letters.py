"""Count the click events waiting on the dead-letter subscription, or move them back to the click topic.

    python -m tools.dead_letters count [--max N]
    python -m tools.dead_letters requeue [--max N] [--timeout SECONDS] [--dry-run]

``count`` pulls up to N messages of ``DEAD_LETTER_SUBSCRIPTION`` and hands
them all back at once, then prints how many wait (``at least N`` when it
stopped at N). ``requeue``, once the cause of the failures is fixed,
publishes up to N of them to ``CLICKS_TOPIC`` with their data and
attributes, and acknowledges each only once its publish is confirmed; with
``--dry-run`` it only counts what it would move. Both work in
``GOOGLE_CLOUD_PROJECT``. The aggregator counts a ``click_id`` once, so
requeueing an event that did count after all does not count it again.

Exits 1 when a publish was not confirmed (those messages stay) or Pub/Sub refused a call, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1

from shared import config
from shared.dead_letters import dead_letter_backlog, requeue

DEFAULT_MAX = 1000
DEFAULT_TIMEOUT_SECONDS = 60.0


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.dead_letters", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    count = commands.add_parser("count", help="how many dead-lettered events wait, up to --max")
    move = commands.add_parser("requeue", help="publish up to --max of them to the click topic again")
    for command in (count, move):
        command.add_argument("--max", type=int, default=DEFAULT_MAX, metavar="N",
                             help=f"most messages to count or move (default {DEFAULT_MAX})")
    move.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_SECONDS,
                      help=f"seconds to wait for each round of publishes (default {DEFAULT_TIMEOUT_SECONDS:g})")
    move.add_argument("--dry-run", action="store_true", help="count what would be moved, move nothing")
    args = parser.parse_args(argv)
    if args.max <= 0:
        parser.error("--max must be positive")
    if args.command == "requeue" and args.timeout <= 0:
        parser.error("--timeout must be positive")
    return args


def waiting(count: int, capped: bool) -> str:
    return f"at least {count}" if capped else str(count)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = config.load(config.PROJECT)
    except config.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    project = settings.required(config.PROJECT)
    subscriber = pubsub_v1.SubscriberClient()
    subscription_path = subscriber.subscription_path(project, settings.dead_letter_subscription)
    try:
        if args.command == "count" or args.dry_run:
            count, capped = dead_letter_backlog(subscriber, subscription_path, args.max)
            verb = "would requeue" if args.command == "requeue" else "waiting"
            print(f"dead letters: {verb} {waiting(count, capped)} on {subscription_path}")
            return 0
        publisher = pubsub_v1.PublisherClient()
        topic_path = publisher.topic_path(project, settings.clicks_topic)
        result = requeue(subscriber, subscription_path, publisher, topic_path, args.max, args.timeout)
    except gexc.GoogleAPICallError as exc:
        print(f"error: {subscription_path}: {exc}", file=sys.stderr)
        return 1
    finally:
        subscriber.close()
    print(f"dead letters: requeued={result.requeued} failed={result.failed} to {topic_path}")
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
