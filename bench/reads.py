"""Count Firestore document reads at the client's transport, the way Firestore bills them.

Wraps the two read RPCs of one ``firestore.Client``'s GAPIC layer: every
``BatchGetDocuments`` answer for a document (found or missing, both billed) and
every document a ``RunQuery`` streams, with a query that returns nothing
counted as one read (Firestore's minimum charge). Not counted: writes,
``ListCollectionIds``, and reads made by another client.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from google.cloud import firestore


class ReadCounter:
    def __init__(self, db: firestore.Client) -> None:
        self.reads = 0
        api = db._firestore_api  # the GAPIC client every read of this Firestore client goes through
        api.batch_get_documents = self._counting(api.batch_get_documents, _is_document_answer, minimum=0)
        api.run_query = self._counting(api.run_query, _has_document, minimum=1)

    def _counting(self, call: Callable[..., Any], counts: Callable[[Any], bool], minimum: int) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Iterator[Any]:
            seen = 0
            try:
                for response in call(*args, **kwargs):
                    if counts(response):
                        seen += 1
                        self.reads += 1
                    yield response
            finally:  # also when the caller stops early (DocumentReference.get takes one answer)
                self.reads += max(0, minimum - seen)

        return counted

    def take(self) -> int:
        """Reads since the last call."""
        reads, self.reads = self.reads, 0
        return reads


def _is_document_answer(response: Any) -> bool:
    return bool(response._pb.HasField("found") or response.missing)


def _has_document(response: Any) -> bool:
    return bool(response._pb.HasField("document"))
