"""Glance 33's image cache (glance.image_cache), in-process, on generated
cache directories, as JSON Lines: the oracle of `cachewalk glance`.

Usage:
  python glance_cache.py run --seed S --count N --work DIR > scenarios.jsonl
  python glance_cache.py state < scenarios.jsonl > states.jsonl

`run` generates N cache directories from seed S (scenario i from the
seed "S:i" alone, so one scenario is reproducible by itself), each built
three times from the same description under DIR/<id>/:

  glance/cache    Glance prunes (ImageCache.prune with image_cache_max_size)
                  then cleans (ImageCache.clean with image_cache_stall_time)
  order/cache     Glance's pruner order, in full: the driver's
                  get_least_recently_accessed() then delete_cached_image(),
                  as prune() loops, until it returns None
  cachewalk/cache left for `cachewalk glance` and `cachewalk remove`

(built, not copied: a copy reads the files and would move their atimes,
the xattr driver's clock). The first output line is a header
({"record": "header", "xattr": bool, "xattr_reason": ...}); then one line
per scenario: its parameters, what it holds ("before": files and rows),
and Glance's answers ("glance": full_order, pruned in order, cleaned,
queued in order, cached, cache_size, removed_files, removed_rows).

`state` reads those lines back and prints, per scenario, the files and
cache.db rows its cachewalk/cache holds now.

What is not Glance's own code: the clock (time.time in the sqlite and
xattr driver modules, the only readers, returns the scenario's "now");
logging is silenced; the configuration is set with CONF.set_override
(image_cache_driver, image_cache_dir, image_cache_max_size,
image_cache_stall_time) as glance-api.conf would. The xattr driver needs
the `xattr` package (Glance's test requirement), installed beside Glance.
"""

import argparse
import json
import logging
import os
import random
import sqlite3
import stat
import sys
import types
import uuid

NOW = 1_795_626_000
DAY = 86400
GIB = 1 << 30

# One feature per featured scenario (scenario i: driver i % 2, feature
# slot (i // 2) % SLOTS; the slots past the list are plain scenarios).
FEATURES = [
    "root_symlink",
    "invalid_symlink",
    "busy_incomplete",
    "sqlite_tie",
    "xattr_no_hits",
    "xattr_stall_zero",
    "root_lock_file",
]
SLOTS = 12
ONLY = {"sqlite_tie": "sqlite", "xattr_no_hits": "xattr",
        "xattr_stall_zero": "xattr"}


def xattr_support(work):
    """Whether `work` takes user xattrs (and the xattr package imports)."""
    try:
        import xattr  # noqa: F401  (Glance's xattr driver imports it)
    except ImportError as e:
        return False, "python package xattr: %s" % e
    probe = os.path.join(work, ".xattr-probe")
    with open(probe, "wb"):
        pass
    try:
        os.setxattr(probe, "user.hits", b"1")
        return True, None
    except OSError as e:
        return False, "%s: user xattrs: %s" % (work, e)
    finally:
        os.unlink(probe)


def new_id(rng):
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def generate(seed, i, xattr_ok):
    """The description of scenario i (module docs)."""
    rng = random.Random("%s:%d" % (seed, i))
    driver = "sqlite" if i % 2 == 0 or not xattr_ok else "xattr"
    slot = (i // 2) % SLOTS
    feature = FEATURES[slot] if slot < len(FEATURES) else None
    if feature and ONLY.get(feature, driver) != driver:
        feature = None
    sc = {"id": "s%04d" % i, "driver": driver,
          "features": [feature] if feature else [], "now": NOW,
          "files": [], "outside": [], "rows": [], "busy": []}

    def frac():
        return rng.choice([0.0, 0.0, 0.25, 0.5, 0.75])

    used_la = set()

    def last_access():
        # Distinct in sqlite (Glance's tie order is the rows' insertion
        # order: feature sqlite_tie).
        while True:
            la = NOW - rng.randint(0, 10 * DAY) + frac()
            if la not in used_la:
                used_la.add(la)
                return la

    n = rng.randint(0, 10)
    total = 0
    for _ in range(n):
        iid = new_id(rng)
        size = rng.choice([0, rng.randint(1, 4096), rng.randint(1, 1 << 20)])
        la = last_access()
        hits = rng.randint(0, 50)
        kind = rng.choices(["both", "file", "row"], [8, 1, 1])[0]
        if driver == "xattr":
            kind = "file"
        if kind in ("both", "file"):
            f = {"rel": iid, "size": size, "mtime": la - rng.randint(0, DAY),
                 "atime": la}
            if driver == "xattr":
                f["hits"] = hits
            sc["files"].append(f)
            total += size
        if kind in ("both", "row"):
            sc["rows"].append({"id": iid, "last_accessed": la,
                               "last_modified": la, "size": size,
                               "hits": hits})
    rng.shuffle(sc["rows"])

    sc["max_size"] = rng.choice([0, total // 2, total, max(total - 1, 0),
                                 total + 1, rng.randint(0, total + 1),
                                 10 * GIB])
    stall = rng.choice([DAY, 3600, rng.randint(1, 3 * DAY), 0])
    if driver == "xattr" and stall == 0 and feature != "xattr_stall_zero":
        stall = 60
    if feature == "xattr_stall_zero":
        stall = 0
    sc["stall_time"] = stall

    for _ in range(rng.randint(0, 4)):
        delta = rng.choice([-2, -1, -0.5, 0, 0.5, 1, 2,
                            rng.randint(-DAY, DAY)])
        sc["files"].append({"rel": "incomplete/" + new_id(rng),
                            "size": rng.randint(0, 8192),
                            "mtime": NOW - stall + delta,
                            "atime": NOW - stall + delta})
    for _ in range(rng.randint(0, 3)):
        t = NOW - rng.randint(0, 3 * DAY)
        sc["files"].append({"rel": "invalid/" + new_id(rng),
                            "size": rng.randint(0, 8192), "mtime": t,
                            "atime": t})
    qt = [NOW - rng.randint(0, 5) for _ in range(rng.randint(0, 4))]
    for t in qt:
        sc["files"].append({"rel": "queue/" + new_id(rng), "size": 0,
                            "mtime": t, "atime": t})

    oldest = min([f["atime"] for f in sc["files"]] +
                 [r["last_accessed"] for r in sc["rows"]] + [NOW]) - 100
    if feature == "root_symlink":
        # A link among the cached images, itself the least recently used
        # (its target the most); beside at least one image; the cache is
        # over its size so the pruner reaches it.
        iid = new_id(rng)
        size = rng.randint(1, 4096)
        sc["outside"].append({"name": "target", "size": size,
                              "mtime": NOW, "atime": NOW})
        other = new_id(rng)
        sc["files"].append({"rel": other, "size": 1, "mtime": oldest + 1,
                            "atime": oldest + 1, "hits": 0})
        if driver == "sqlite":
            sc["rows"].append({"id": other, "last_accessed": oldest + 1,
                               "last_modified": oldest + 1, "size": 1,
                               "hits": 0})
        sc["files"].append({"rel": iid, "link": "../outside/target",
                            "size": 0, "mtime": oldest, "atime": oldest,
                            "hits": 1})
        if driver == "sqlite":
            sc["rows"].append({"id": iid, "last_accessed": oldest,
                               "last_modified": oldest, "size": size,
                               "hits": 1})
        sc["max_size"] = 0
    elif feature == "invalid_symlink":
        sc["outside"].append({"name": "failed", "size": 100,
                              "mtime": oldest, "atime": oldest})
        sc["files"].append({"rel": "invalid/" + new_id(rng),
                            "link": "../../outside/failed", "size": 0,
                            "mtime": oldest, "atime": oldest})
    elif feature == "busy_incomplete":
        rel = "incomplete/" + new_id(rng)
        t = NOW - stall - 10
        sc["files"].append({"rel": rel, "size": 512, "mtime": t,
                            "atime": t})
        sc["busy"].append(rel)
    elif feature == "sqlite_tie":
        # Two rows accessed at the same instant, inserted in the reverse
        # of their ids' order, the least recently used; exactly the first
        # Glance picks is pruned.
        a, b = sorted([new_id(rng), new_id(rng)])
        for iid in (b, a):
            sc["files"].append({"rel": iid, "size": 1000, "mtime": oldest,
                                "atime": oldest})
            sc["rows"].append({"id": iid, "last_accessed": oldest,
                               "last_modified": oldest, "size": 1000,
                               "hits": 0})
        total += 2000
        sc["max_size"] = total - 1
    elif feature == "xattr_no_hits":
        sc["files"].append({"rel": new_id(rng), "size": 10,
                            "mtime": NOW - 10, "atime": NOW - 10,
                            "hits": None})
    elif feature == "xattr_stall_zero":
        rel = "incomplete/" + new_id(rng)
        sc["files"].append({"rel": rel, "size": 10, "mtime": NOW + 0.25,
                            "atime": NOW + 0.25})
    elif feature == "root_lock_file":
        # glance-cache-prune: the oslo lock file Glance's prune API takes,
        # in the cache root by default.
        sc["files"].append({"rel": "glance-cache-prune", "size": 0,
                            "mtime": NOW - 50, "atime": NOW - 50})
    return sc


def materialize(sc, top):
    """Build the scenario under `top` (top/cache and top/outside)."""
    root = os.path.join(top, "cache")
    outside = os.path.join(top, "outside")
    for d in (root, outside, *(os.path.join(root, s) for s in
                               ("incomplete", "invalid", "queue"))):
        os.makedirs(d)
    if sc["driver"] == "sqlite":
        conn = sqlite3.connect(os.path.join(root, "cache.db"))
        # Glance's schema (glance/image_cache/drivers/sqlite.py).
        conn.execute("""CREATE TABLE IF NOT EXISTS cached_images (
                        image_id TEXT PRIMARY KEY,
                        last_accessed REAL DEFAULT 0.0,
                        last_modified REAL DEFAULT 0.0,
                        size INTEGER DEFAULT 0,
                        hits INTEGER DEFAULT 0,
                        checksum TEXT)""")
        for r in sc["rows"]:
            conn.execute("INSERT INTO cached_images (image_id, last_accessed,"
                         " last_modified, size, hits) VALUES (?, ?, ?, ?, ?)",
                         (r["id"], r["last_accessed"], r["last_modified"],
                          r["size"], r["hits"]))
        conn.commit()
        conn.close()
    times = []
    for o in sc["outside"]:
        p = os.path.join(outside, o["name"])
        with open(p, "wb") as f:
            f.truncate(o["size"])
        times.append((p, o, True))
    for f in sc["files"]:
        p = os.path.join(root, f["rel"])
        if "link" in f:
            os.symlink(f["link"], p)
            times.append((p, f, False))
            continue
        with open(p, "wb") as fh:
            fh.truncate(f["size"])
        if sc["driver"] == "xattr" and f.get("hits") is not None \
                and "/" not in f["rel"]:
            os.setxattr(p, "user.hits", str(f["hits"]).encode())
        times.append((p, f, True))
    for p, f, follow in times:
        ns = (int(round(f["atime"] * 1e9)), int(round(f["mtime"] * 1e9)))
        os.utime(p, ns=ns, follow_symlinks=follow)
    return root


def listing(root):
    """Every non-directory entry of the root and its subdirectories."""
    out = []
    for sub in ("", "incomplete", "invalid", "queue"):
        d = os.path.join(root, sub)
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            # lstat: resolving a link would move its atime.
            if stat.S_ISDIR(os.lstat(os.path.join(d, name)).st_mode):
                continue
            out.append(os.path.join(sub, name) if sub else name)
    return sorted(out)


def rows_of(root):
    p = os.path.join(root, "cache.db")
    if not os.path.exists(p):
        return []
    conn = sqlite3.connect("file:%s?mode=ro" % p, uri=True)
    try:
        return sorted(r[0] for r in
                      conn.execute("SELECT image_id FROM cached_images"))
    finally:
        conn.close()


class Glance:
    """Glance 33's image cache, configured as glance-api.conf would."""

    def __init__(self):
        from oslo_config import cfg
        import glance.image_cache as ic
        from glance.image_cache.drivers import sqlite as sqlite_driver
        self.CONF = cfg.CONF
        self.CONF([], project="glance", default_config_files=[])
        self.ic = ic
        self.modules = [sqlite_driver]
        try:
            from glance.image_cache.drivers import xattr as xattr_driver
            self.modules.append(xattr_driver)
        except ImportError:
            pass

    def cache(self, sc, root):
        for k, v in (("image_cache_driver", sc["driver"]),
                     ("image_cache_dir", root),
                     ("image_cache_max_size", sc["max_size"]),
                     ("image_cache_stall_time", sc["stall_time"])):
            self.CONF.set_override(k, v)
        # The fixed clock: the drivers' only reader is time.time().
        clock = types.SimpleNamespace(time=lambda: float(sc["now"]))
        for m in self.modules:
            m.time = clock
        c = self.ic.ImageCache()
        got = type(c.driver).__module__.rsplit(".", 1)[-1]
        if got != sc["driver"]:
            raise RuntimeError("Glance fell back to the %s driver" % got)
        return c

    def answer(self, sc, work):
        top = os.path.join(work, sc["id"])
        # The full pruner order.
        root = materialize(sc, os.path.join(top, "order"))
        c = self.cache(sc, root)
        order = []
        entry = c.driver.get_least_recently_accessed()
        while entry and len(order) < 10000:
            order.append(entry[0])
            c.driver.delete_cached_image(entry[0])
            entry = c.driver.get_least_recently_accessed()

        root = materialize(sc, os.path.join(top, "glance"))
        c = self.cache(sc, root)
        cached = []
        for r in c.get_cached_images():
            cached.append({"id": r["image_id"], "hits": r["hits"],
                           "last_accessed": int(r["last_accessed"] // 1)})
        cached.sort(key=lambda r: r["id"])
        queued = c.driver.get_queued_images()
        size = c.get_cache_size()
        files0, rows0 = listing(root), rows_of(root)
        pruned = []
        delete = c.driver.delete_cached_image

        def spy(image_id):
            pruned.append(image_id)
            return delete(image_id)
        c.driver.delete_cached_image = spy
        c.prune()
        files1 = listing(root)
        c.clean()
        files2 = listing(root)
        rows2 = rows_of(root)
        cleaned = sorted(set(files1) - set(files2))
        return {"full_order": order, "pruned": pruned, "cleaned": cleaned,
                "queued": queued, "cached": cached, "cache_size": size,
                "removed_files": sorted(set(files0) - set(files2)),
                "removed_rows": sorted(set(rows0) - set(rows2))}


def run(args):
    logging.disable(logging.CRITICAL)
    os.makedirs(args.work, exist_ok=True)
    ok, why = xattr_support(args.work)
    print(json.dumps({"record": "header", "xattr": ok, "xattr_reason": why,
                      "seed": args.seed, "count": args.count}))
    g = Glance()
    for i in range(args.count):
        sc = generate(args.seed, i, ok)
        glance = g.answer(sc, args.work)
        b = materialize(sc, os.path.join(args.work, sc["id"], "cachewalk"))
        before = {"files": listing(b), "rows": rows_of(b)}
        out = {k: sc[k] for k in ("id", "driver", "features", "now",
                                  "max_size", "stall_time", "busy")}
        out.update(dir=b, before=before, glance=glance)
        print(json.dumps(out), flush=True)


def state(_args):
    for line in sys.stdin:
        sc = json.loads(line)
        if sc.get("record") == "header":
            continue
        print(json.dumps({"id": sc["id"], "files": listing(sc["dir"]),
                          "rows": rows_of(sc["dir"])}))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--seed", required=True)
    r.add_argument("--count", type=int, default=500)
    r.add_argument("--work", required=True)
    sub.add_parser("state")
    args = p.parse_args()
    {"run": run, "state": state}[args.cmd](args)


if __name__ == "__main__":
    main()
