"""Write the registry of campaign ids issued before ids were keyed.

    GOOGLE_CLOUD_PROJECT=... CAMPAIGN_ID_KEY=... python -m tools.legacy_ids

Run it once the admin function that issues keyed ids is deployed (so no
unkeyed id can be issued after it), and on a fresh deployment too (it then
writes an empty registry): until a registry exists the track function looks
every id up. Every stored campaign whose id fails the keyed check is listed;
running it again rewrites the registry from what is stored then. Track
instances load it when they start, so instances already running keep looking
every id up until they are replaced (a redeploy replaces them all).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from google.cloud import firestore

from shared import config
from shared.ids import keyed_ids
from shared.legacy_ids import save_registry
from shared.store import CAMPAIGNS


def main(argv: Sequence[str] = ()) -> int:
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        settings = config.load(config.PROJECT, config.CAMPAIGN_ID_KEY)
    except config.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    keyed = keyed_ids(settings)
    db = firestore.Client(project=settings.project)
    stored = [int(s.id) for s in db.collection(CAMPAIGNS).select([]).stream()]
    legacy = [i for i in stored if not keyed.verify(i)]
    documents = save_registry(db, legacy)
    print(f"legacy id registry: {len(legacy)} of {len(stored)} campaign ids are unkeyed, "
          f"written in {documents} document(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
