#!/usr/bin/env python3
"""gather.py DIR STREAM: the fleet's records as one JSON Lines stream.

DIR holds status.json ({host: {"status": {tool: exit status} or null,
"failure": why the host failed or null}}) and DIR/HOST/{audit,check,
verify}.jsonl as fetched by fleet.yml. STREAM gets every record of every
host (hosts sorted, then audit, check, verify), each with "host" first, plus
one error record per host that failed (unreachable, a task failing) and per
tool that exited 2 or more without writing an error record, and per line
that is not a JSON object. Prints one line:

    fleet: H hosts, R records, U unsafe, E errors

U counts records of disks not to trust: the audit's verdict "unsafe", a
_base file --check does not accept, a file that does not match its Glance
record. E counts records with an "error" facet. Exit 1 when U or E is not
zero, 0 otherwise, 2 when DIR cannot be read.

Lines are read as bytes, of any length, and parsed with the json module
(never decoded as text first); the output is ASCII JSON (json.dumps
escapes), so nothing a tool writes can make the stream invalid.
"""
import json
import os
import sys

TOOLS = (("audit", "cachewalk"), ("check", "imginfo-parse"), ("verify", "checksum-tee"))


def unsafe(rec):
    audit = rec.get("audit")
    check = rec.get("check")
    sums = rec.get("checksums")
    return (
        (isinstance(audit, dict) and audit.get("verdict") == "unsafe")
        or (isinstance(check, dict) and check.get("acceptable") is False)
        or (isinstance(sums, dict) and sums.get("verified") is False)
    )


def records(host, path):
    """The records of one fetched file, each with the host first."""
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            why = "not a JSON object"
            try:
                rec = json.loads(line)
            except ValueError as e:
                rec, why = None, str(e)
            if not isinstance(rec, dict):
                yield {
                    "host": host,
                    "error": {
                        "kind": "bad_json",
                        "message": why,
                        "file": os.path.basename(path),
                        "line": n,
                    },
                }
                continue
            # A record's own "host" (none of the tools' records has one
            # today) is kept apart rather than overwritten.
            if "host" in rec:
                rec["record_host"] = rec.pop("host")
            yield {"host": host, **rec}


def main(argv):
    if len(argv) != 3:
        print("usage: gather.py DIR STREAM", file=sys.stderr)
        return 2
    top, stream = argv[1], argv[2]
    try:
        with open(os.path.join(top, "status.json"), "rb") as f:
            status = json.load(f)
    except (OSError, ValueError) as e:
        print(f"gather: {top}/status.json: {e}", file=sys.stderr)
        return 2
    n_rec = n_unsafe = n_err = 0
    tmp = stream + ".part"
    with open(tmp, "w", encoding="ascii") as out:

        def emit(rec):
            nonlocal n_rec, n_unsafe, n_err
            out.write(json.dumps(rec, ensure_ascii=True, separators=(",", ":")) + "\n")
            n_rec += 1
            n_unsafe += unsafe(rec)
            n_err += "error" in rec

        for host in sorted(status):
            st = status[host] or {}
            rcs = st.get("status")
            if not isinstance(rcs, dict):
                emit({"host": host, "error": {"kind": "host_failed", "message": st.get("failure") or "no status"}})
                continue
            for name, tool in TOOLS:
                if tool not in rcs:
                    continue
                path = os.path.join(top, host, name + ".jsonl")
                errors = 0
                if os.path.exists(path):
                    for rec in records(host, path):
                        errors += "error" in rec
                        emit(rec)
                rc = int(rcs[tool])
                if rc >= 2 and errors == 0:
                    emit({"host": host, "error": {"kind": "exit_status", "tool": tool, "exit_status": rc}})
    os.replace(tmp, stream)
    print(f"fleet: {len(status)} hosts, {n_rec} records, {n_unsafe} unsafe, {n_err} errors")
    return 1 if n_unsafe or n_err else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
