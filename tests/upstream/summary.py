#!/usr/bin/env python3
"""Print make test-upstream's summary line from the counts the
differential tests recorded (tests/src/summary.rs) in DIR:

upstream differential: nova A/B, glance C/D, oslo E/F, cinder G/H agree (K documented differences)

A/B: of the B cases run, A agree: both sides say the same, or they differ
only as a row of the component's table of deliberate differences says; K
counts the latter over all components. A component that did not run
(skipped outside CI) shows 0/0. Exit 1 when A is not B (a difference
nobody documented).
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
        # A case agrees when both sides say the same, or differ only as a
        # row of the component's table says (K counts those).
        agreeing = n["agree"] + n["documented"]
        parts.append("%s %d/%d" % (c, agreeing, n["total"]))
        documented += n["documented"]
        if agreeing != n["total"]:
            bad.append(c)
    print("upstream differential: %s agree (%d documented differences)"
          % (", ".join(parts), documented))
    if bad:
        print("undocumented differences in: " + ", ".join(bad), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
