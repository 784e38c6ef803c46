"""The dead-letter backlog as the scheduled run reports it: in its summary, and as an ERROR line to alert on.

Nothing brings a dead-lettered click event back by itself, so every
scheduled run that finds some waiting says so at ERROR until they are
requeued (``python -m tools.dead_letters``; README, Dead letters).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1

from shared.config import PROJECT, Settings
from shared.dead_letters import dead_letter_backlog
from shared.logs import get_logger

log = get_logger("aggregate")

# Enough to tell a few stragglers from a failure that sent everything there;
# past it the run reports "at least" and spends no longer pulling.
DEAD_LETTER_COUNT_CAP = 1000
WAITING_MESSAGE = "dead-lettered click events waiting"
# Dead-lettered messages wait on their subscription, so a pull answers at once when any does:
# the wait only bounds the empty case, which every run meets.
CHECK_PULL_WAIT_SECONDS = 0.5


@dataclass
class DeadLetterCheck:
    subscriber: pubsub_v1.SubscriberClient
    subscription_path: str
    cap: int = DEAD_LETTER_COUNT_CAP

    def check(self, deadline: float) -> dict[str, Any]:
        """The run summary's fields: ``dead_letters`` (None when it could not be counted) and ``dead_letters_capped``.

        A failed count is a warning, not a failed run: the drain's own work
        is done, and the next run counts again. Each pull waits until
        ``deadline`` (monotonic) at most.
        """
        wait = min(CHECK_PULL_WAIT_SECONDS, deadline - time.monotonic())
        if wait <= 0:
            return {"dead_letters": None, "dead_letters_capped": False}
        try:
            waiting, capped = dead_letter_backlog(self.subscriber, self.subscription_path, self.cap, wait)
        except gexc.GoogleAPICallError as exc:
            log.warning("dead-letter backlog not counted",
                        extra={"subscription": self.subscription_path, "error": repr(exc)})
            return {"dead_letters": None, "dead_letters_capped": False}
        if waiting:
            log.error(WAITING_MESSAGE, extra={"dead_letters": waiting, "capped": capped,
                                              "subscription": self.subscription_path})
        return {"dead_letters": waiting, "dead_letters_capped": capped}


def build_dead_letter_check(settings: Settings) -> DeadLetterCheck:
    subscriber = pubsub_v1.SubscriberClient()
    return DeadLetterCheck(
        subscriber, subscriber.subscription_path(settings.required(PROJECT), settings.dead_letter_subscription)
    )
