#!/usr/bin/env python3
"""Print make test-upstream's summary line from the counts the
differential tests recorded (tests/src/summary.rs) in DIR:

upstream differential: nova A/B, glance C/D, oslo E/F, cinder G/H agree (K documented differences)

A component that did not run (skipped outside CI, or not built yet)
shows 0/0. Exit 1 when a component's agreeing and documented cases do
not add up to its total (a difference nobody documented).
"""
import json
import os
import sys

COMPONENTS = ["nova", "glance", "oslo", "cinder"]


def main():
    d = sys.argv[1]
    parts, documented, bad = [], 0, []
    for c in COMPONENTS:
        try:
            with open(os.path.join(d, c + ".json")) as f:
                n = json.load(f)
        except (OSError, ValueError):
            n = {"agree": 0, "total": 0, "documented": 0}
        parts.append("%s %d/%d" % (c, n["agree"], n["total"]))
        documented += n["documented"]
        if n["agree"] + n["documented"] != n["total"]:
            bad.append(c)
    print("upstream differential: %s agree (%d documented differences)"
          % (", ".join(parts), documented))
    if bad:
        print("undocumented differences in: " + ", ".join(bad), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
