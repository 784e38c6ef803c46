"""Count Firestore operations at the client's transport, the way Firestore bills them.

Wraps the RPCs of one ``firestore.Client``'s GAPIC layer. Reads: every
``BatchGetDocuments`` answer for a document (found or missing, both billed) and
every document a ``RunQuery`` streams, with a query that returns nothing
counted as one read (Firestore's minimum charge). Writes and deletes: each
write of a ``Commit`` (its field transforms, such as ``Increment``, are part of
the one write). Not counted: ``ListCollectionIds``, TTL deletes (they happen in
Firestore, not at a client) and operations made by another client.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from google.cloud import firestore


class ReadCounter:
    def __init__(self, db: firestore.Client) -> None:
        self.reads = 0
        self.writes = 0
        self.deletes = 0
        api = db._firestore_api  # the GAPIC client every call of this Firestore client goes through
        api.batch_get_documents = self._counting(api.batch_get_documents, _is_document_answer, minimum=0)
        api.run_query = self._counting(api.run_query, _has_document, minimum=1)
        commit = api.commit

        def counted_commit(*args: Any, **kwargs: Any) -> Any:
            response = commit(*args, **kwargs)  # counted once committed: a failed commit writes nothing
            request = kwargs.get("request") or args[0]
            for write in request["writes"] if isinstance(request, dict) else request.writes:
                if _operation(write) == "delete":
                    self.deletes += 1
                else:
                    self.writes += 1
            return response

        api.commit = counted_commit

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


def _operation(write: Any) -> str | None:
    pb = getattr(write, "_pb", write)
    return pb.WhichOneof("operation")  # type: ignore[no-any-return]
