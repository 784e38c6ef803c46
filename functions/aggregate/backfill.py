"""The fields the admin's list filters on, given to campaigns written before they existed."""

from __future__ import annotations

import time
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from shared.counting import CALL_TIMEOUT_SECONDS
from shared.models import ACTIVE
from shared.store import (
    CAMPAIGNS,
    DOCUMENT_NAME,
    MAX_WRITES_PER_COMMIT,
    STATUS,
    TARGETS,
    data_of,
    state_ref,
    targets_of,
)

_BACKFILL_PAGE = MAX_WRITES_PER_COMMIT  # one update a campaign: a page is one commit
# Its progress in aggregator/state; a deployment that went through the targets-only backfill
# before ("targets_backfill") walks its campaigns once more, for status.
_BACKFILL = "campaign_backfill"


class CampaignBackfill:
    """Gives campaigns written before ``targets`` or ``status`` existed the fields the list filters on, once.

    The admin's list queries ``status`` (archived campaigns are left out unless asked for) and the
    platform filter ``targets``; a campaign without them would never match. Walks every campaign by
    name, a page at a time until ``deadline``, its progress kept in ``aggregator/state``; once through,
    it costs one read per run.
    """

    def __init__(self, db: firestore.Client, page_size: int = _BACKFILL_PAGE) -> None:
        self.db = db
        self.page_size = page_size

    def run(self, deadline: float) -> int:
        """Campaigns given a missing field in this run."""
        progress = data_of(state_ref(self.db).get(timeout=CALL_TIMEOUT_SECONDS)).get(_BACKFILL) or {}
        backfilled = 0
        while not progress.get("done") and time.monotonic() < deadline:
            query = self.db.collection(CAMPAIGNS).order_by(DOCUMENT_NAME).limit(self.page_size)
            if progress.get("after"):
                query = query.start_after({DOCUMENT_NAME: self.db.collection(CAMPAIGNS).document(progress["after"])})
            campaigns = list(query.stream(timeout=CALL_TIMEOUT_SECONDS))
            batch, missing = self.db.batch(), 0
            for campaign in campaigns:
                fields = _missing_filter_fields(data_of(campaign))
                if fields:
                    option = self.db.write_option(last_update_time=campaign.update_time)
                    batch.update(campaign.reference, fields, option=option)
                    missing += 1
            if missing:
                try:
                    batch.commit(timeout=CALL_TIMEOUT_SECONDS)
                except (gexc.FailedPrecondition, gexc.NotFound):
                    return backfilled  # one was edited or deleted meanwhile: this page again next run
            backfilled += missing
            progress = {"done": True} if len(campaigns) < self.page_size else {"after": campaigns[-1].id}
            state_ref(self.db).set({_BACKFILL: progress}, merge=True, timeout=CALL_TIMEOUT_SECONDS)
        return backfilled


def _missing_filter_fields(data: dict[str, Any]) -> dict[str, Any]:
    """What a campaign lacks of the fields the list filters on, as the admin writes them."""
    fields: dict[str, Any] = {}
    if TARGETS not in data:
        fields[TARGETS] = targets_of(data.get("platforms", ()))
    if STATUS not in data:
        fields[STATUS] = ACTIVE
    return fields
