#!/usr/bin/env python3
"""Render the tables of deliberate differences from the upstream code
(tests/upstream/differences-*.json, which the differential tests assert)
as a man page section, so the man page says exactly what the tests hold.

    man_table.py [--check] OUT.roff TITLE=JSON...

Writes OUT.roff (one .SH, one .SS per table); with --check, exits 1 when
OUT.roff differs from what the tables give (make man-check).
"""
import json
import sys


def esc(text):
    """Text safe in a roff paragraph."""
    text = text.replace("\\", "\\e")
    out = []
    for line in text.split("\n"):
        if line.startswith((".", "'")):
            line = "\\&" + line
        out.append(line)
    return "\n".join(out)


def side(row, keys):
    for k in keys:
        if isinstance(row.get(k), str):
            return row[k]
    return ""


def render(tables):
    lines = [
        ".SH DIFFERENCES FROM THE UPSTREAM CODE",
        "The differential tests (make test\\-upstream) run the upstream OpenStack "
        "code itself beside this tool on generated and real inputs. Where the "
        "two disagree on purpose, the case is one of the rows below; any other "
        "disagreement, or a row no case shows any more, fails the tests.",
    ]
    for title, path in tables:
        with open(path) as f:
            doc = json.load(f)
        lines.append('.SS "%s"' % esc(title))
        # Rows that say the same for several drivers or classes are one entry.
        merged = []
        for r in doc["differences"]:
            body = (
                side(r, ["upstream", "glance", "nova"]),
                side(r, ["ours", "cachewalk", "imginfo-parse"]),
                r.get("why", ""),
            )
            label = r.get("class", "")
            extra = r.get("driver")
            for m in merged:
                if m["label"] == label and m["body"] == body:
                    if extra and extra not in m["extra"]:
                        m["extra"].append(extra)
                    break
            else:
                merged.append({"label": label, "body": body, "extra": [extra] if extra else [],
                               "bug": r.get("bug") is True})
        for m in merged:
            head = m["label"] + (" (%s)" % ", ".join(m["extra"]) if m["extra"] else "")
            if m.get("bug"):
                head += " (a known bug of this tool, to be fixed)"
            up, ours, why = m["body"]
            lines.append(".TP")
            lines.append(".B %s" % esc(head))
            lines.append("Upstream: " + esc(up))
            lines.append(".br")
            lines.append("Here: " + esc(ours))
            lines.append(".br")
            lines.append("Why: " + esc(why))
    return "\n".join(lines) + "\n"


def main(argv):
    check = argv[:1] == ["--check"]
    if check:
        argv = argv[1:]
    out, specs = argv[0], argv[1:]
    tables = [tuple(s.split("=", 1)) for s in specs]
    text = render(tables)
    if check:
        try:
            with open(out) as f:
                now = f.read()
        except OSError:
            now = None
        if now != text:
            print("%s is out of date: run 'make man' and commit it" % out, file=sys.stderr)
            return 1
        return 0
    with open(out, "w") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
