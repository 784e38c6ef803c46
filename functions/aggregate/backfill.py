"""The ``targets`` map given to campaigns written before it existed, a page per run."""

from __future__ import annotations

from google.api_core import exceptions as gexc
from google.cloud import firestore

from shared.counting import CALL_TIMEOUT_SECONDS
from shared.store import CAMPAIGNS, DOCUMENT_NAME, MAX_WRITES_PER_COMMIT, TARGETS, data_of, state_ref, targets_of

_BACKFILL_PAGE = MAX_WRITES_PER_COMMIT  # one update a campaign: a page is one commit
_BACKFILL = "targets_backfill"


class TargetsBackfill:
    """Gives campaigns written before ``targets`` existed their map, one page per run, once.

    The admin's platform filter queries ``targets``; a campaign without it would
    never match. Walks every campaign by name, its progress kept in
    ``aggregator/state``; once through, it costs one read per run.
    """

    def __init__(self, db: firestore.Client, page_size: int = _BACKFILL_PAGE) -> None:
        self.db = db
        self.page_size = page_size

    def run(self) -> int:
        """Campaigns given ``targets`` in this run."""
        progress = data_of(state_ref(self.db).get(timeout=CALL_TIMEOUT_SECONDS)).get(_BACKFILL) or {}
        if progress.get("done"):
            return 0
        query = self.db.collection(CAMPAIGNS).order_by(DOCUMENT_NAME).limit(self.page_size)
        if progress.get("after"):
            query = query.start_after({DOCUMENT_NAME: self.db.collection(CAMPAIGNS).document(progress["after"])})
        campaigns = list(query.stream(timeout=CALL_TIMEOUT_SECONDS))
        batch, missing = self.db.batch(), 0
        for campaign in campaigns:
            data = data_of(campaign)
            if TARGETS not in data:
                option = self.db.write_option(last_update_time=campaign.update_time)
                batch.update(campaign.reference, {TARGETS: targets_of(data.get("platforms", ()))}, option=option)
                missing += 1
        if missing:
            try:
                batch.commit(timeout=CALL_TIMEOUT_SECONDS)
            except (gexc.FailedPrecondition, gexc.NotFound):
                return 0  # one was edited or deleted meanwhile: this page again next run
        done = len(campaigns) < self.page_size
        state_ref(self.db).set({_BACKFILL: {"done": True} if done else {"after": campaigns[-1].id}}, merge=True,
                               timeout=CALL_TIMEOUT_SECONDS)
        return missing
