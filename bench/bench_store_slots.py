"""What the store's client slots cost in this build (SHOAL_MAX_CLIENTS at
build time, 256 by default): the segment's size beyond the data area for
a few store sizes and object tables, and the time to open a store. Run it
in a build of each setting to compare them (docs/cluster.md has both).

The baseline, in the same run, is the segment with the smallest table the
store allows for the capacity (the default table).

Usage: python bench/bench_store_slots.py [--repeat 5] [--json PATH]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h  # noqa: E402

from shoal import config  # noqa: E402
from shoal._store._core import MAX_CLIENTS, Store  # noqa: E402
from shoal.store import ObjectStore  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = []
    for capacity in (256 << 20, 4 << 30):
        for table, entries in (("default", 0), ("spilling's", config.max_objects(capacity, True))):
            size = Store.segment_size(capacity, entries)
            opens = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                store = ObjectStore.open(capacity, max_objects=entries or None)
                opens.append(time.perf_counter() - t)
                store.close()
            rows.append({"store": h.human_size(capacity), "table": table, "entries": entries or None,
                         "overhead_mib": (size - capacity) / 2**20, "open_ms": statistics.median(opens) * 1e3})
    print(f"\nStore segments with {MAX_CLIENTS} client slots (median of {args.repeat} opens)\n")
    print(h.table(rows, [("store", "store"), ("table", "table"), ("entries", "entries"),
                         ("overhead_mib", "beyond data, MiB"), ("open_ms", "open, ms")]))
    out = h.save(f"bench_store_slots_{MAX_CLIENTS}", {"max_clients": MAX_CLIENTS, "rows": rows}, args.json)
    print(f"\nJSON: {out}")


if __name__ == "__main__":
    main()
