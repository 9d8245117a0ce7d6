"""Nova's image cache manager (nova.virt.libvirt.imagecache), in-process,
on generated instances paths, as JSON Lines: the oracle of `cachewalk
nova`.

Usage:
  python nova_imagecache.py run --seed S --count N --work DIR > scenarios.jsonl

`run` generates N instances paths from seed S (scenario i from the seed
"S:i" alone, so one scenario is reproducible by itself; in worker
processes, printed in order), each built twice from the same description
at the same path DIR/<id>/tree/instances (absolute backing names are
then the same in both):

  first build     Nova's pass runs there (and deletes), then it is renamed
                  to DIR/<id>/nova
  second build    left for `cachewalk nova`

beside DIR/<id>/outside (targets of links) and DIR/<id>/instances.jsonl
(the inventory in cachewalk's format). One output line per scenario: its
parameters, the `_base` names it holds, and Nova's answer per `_base`
name ("nova": {"error", "files": {name: {"bucket", "in_use", "removed"}}}).

What Nova runs: what ComputeManager._run_image_cache_manager_pass does,
minus the database: storage_users.register_storage_use(instances_path,
CONF.host), storage_users.get_storage_users(instances_path), the
scenario's instances filtered to those hosts (the query's
`host IN nodes`; deleted instances are simply not generated), then
ImageCacheManager().update(context, instances): Nova's own scan, in-use
marking, `qemu-img info` (real, through oslo.concurrency's prlimit) of each
current instance's `disk`, ageing and removal under its external locks.

What is not Nova's own code:
- the clock: `time` in nova.virt.libvirt.imagecache (file ages) and
  nova.virt.storage_users (compute_nodes) is an object whose time()
  returns the scenario's "now";
- objects.BlockDeviceMappingList.bdms_by_instance_uuid returns the
  scenario's swap and ephemeral BlockDeviceMapping objects (no database);
- the instances are nova.objects.Instance built from the scenario (uuid,
  id for the name, host, image_ref, kernel_id, ramdisk_id, task_state,
  vm_state, os_type);
- privsep runs in-process (oslo.privsep's client mode off, as Nova's own
  PrivsepFixture does): nova.privsep.path.utime is plain os.utime;
- configuration by CONF.set_override (instances_path, host,
  [image_cache] subdirectory_name, remove_unused_base_images,
  remove_unused_original_minimum_age_seconds,
  remove_unused_resized_minimum_age_seconds, default_ephemeral_format,
  [oslo_concurrency] lock_path); logging is silenced.
"""

import argparse
import hashlib
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import types
import uuid

NOW = 1_795_626_000
DAY = 86400
HOST = "compute-1"

# One feature per featured scenario (slot i % SLOTS; the slots past the
# list are plain scenarios, built to avoid every feature's trigger).
FEATURES = [
    "off_storage_host",
    "hostless_instance",
    "subsecond_mtime",
    "empty_image_ref",
    "base_symlink",
    "backing_chain",
    "base_dangling_link",
    "sidecar_as_backing",
]
SLOTS = 16

RESIZE_TASKS = ["resize_prep", "resize_migrating", "resize_migrated",
                "resize_finish"]


def sha1(s):
    return hashlib.sha1(s.encode("utf-8")).hexdigest()


def eph_ext(label):
    return hashlib.md5(label.encode("utf-8")).hexdigest()[:7]


def bucket(name):
    """Nova's _scan_base_images bucket of a name (for ages only)."""
    if len(name) == 40:
        return "original"
    if len(name) > 42 and name[40] == "_":
        return "resized"
    p = name.split("_")
    if len(p) == 2 and p[0] == "swap" and p[1].isdigit():
        return "swap"
    if len(p) == 3 and p[0] == "ephemeral" and p[1].isdigit() \
            and len(p[2]) == 7:
        return "ephemeral"
    return None


def new_uuid(rng):
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def generate(seed, i):
    """The description of scenario i (module docs)."""
    rng = random.Random("%s:%d" % (seed, i))
    slot = i % SLOTS
    feature = FEATURES[slot] if slot < len(FEATURES) else None
    orig = rng.choice([DAY, DAY, 7200, 600])
    resized = rng.choice([3600, 3600, 60, 7200])
    fmt = rng.choice([None, None, "ext4"])
    sc = {"id": "n%04d" % i, "features": [feature] if feature else [],
          "now": NOW, "host": HOST, "original_age": orig,
          "resized_age": resized, "ephemeral_format": fmt,
          "compute_nodes": None, "base": [], "outside": [], "dirs": [],
          "instances": []}
    label = fmt or "vfat"

    # compute_nodes: other hosts, recent or not (Nova: now - t < 86400).
    recent = [HOST]
    if rng.random() < 0.5:
        nodes = {}
        for h in ("compute-2", "compute-3"):
            if rng.random() < 0.7:
                age = rng.choice([rng.randint(0, DAY - 1), DAY - 1, DAY,
                                  DAY + 1, rng.randint(DAY, 3 * DAY)])
                nodes[h] = NOW - age
                if age < DAY:
                    recent.append(h)
        sc["compute_nodes"] = nodes

    def age_for(name):
        b = bucket(name)
        t = resized if b == "resized" else orig
        return max(0, rng.choice([t - 2, t - 1, t, t + 1, t + 2,
                                  rng.randint(0, t), rng.randint(t, 10 * t),
                                  0]))

    names = []

    def add(name, **kw):
        if name in names:
            return
        names.append(name)
        f = {"name": name, "size": rng.choice([0, 512, 4096]),
             "age": age_for(name)}
        f.update(kw)
        sc["base"].append(f)

    pool = []
    for _ in range(rng.randint(1, 5)):
        pool.append(rng.choice([new_uuid(rng)] * 5 +
                               [str(rng.randint(1, 99))]))
    for img in pool:
        fp = sha1(img)
        if rng.random() < 0.8:
            add(fp)
        if rng.random() < 0.15:
            add(fp + "_sm")
        for _ in range(rng.choice([0, 0, 1, 2, 3])):
            n = rng.choice([10, 20, 40, 5368709120, 10737418240,
                            rng.randint(1, 200)])
            add("%s_%d" % (fp, n))
            if rng.random() < 0.1:
                add("%s_%d.info" % (fp, n))
        for ext, p in ((".info", 0.1), (".sha1", 0.1), (".part", 0.1),
                       (".converted", 0.05), ("_sm.sha1", 0.05)):
            if rng.random() < p:
                add(fp + ext)
    for mb in (512, 1024, 2048, 0):
        if rng.random() < 0.25:
            add("swap_%d" % mb)
    for gb in (1, 20):
        for lab in ("vfat", "ext4"):
            if rng.random() < 0.2:
                add("ephemeral_%d_%s" % (gb, eph_ext(lab)))
    for extra in ("ephemeral_0_20_None", "ephemeral_20_default",
                  "ephemeral_20_linux", "foo", "00000001", "swap_",
                  "swap_abc", new_uuid(rng), "x" * 40,
                  sha1(new_uuid(rng)), sha1(new_uuid(rng)) + "_7",
                  sha1(new_uuid(rng)) + "_12abc"):
        if rng.random() < 0.08:
            add(extra)
    if rng.random() < 0.1:
        sc["base"].append({"name": sha1(new_uuid(rng)), "dir": True,
                           "age": 10 * DAY})

    # Instances.
    def instance(host):
        inst = {"uuid": new_uuid(rng), "id": rng.randint(1, 0xFFFF),
                "host": host,
                "image_ref": rng.choice(pool) if rng.random() < 0.8
                else rng.choice([None, new_uuid(rng)]),
                "kernel_id": rng.choice(pool) if rng.random() < 0.2 else None,
                "ramdisk_id": rng.choice(pool) if rng.random() < 0.2
                else None,
                "task_state": rng.choice([None] * 6 + RESIZE_TASKS +
                                         ["spawning", "rebuilding"]),
                "vm_state": rng.choice(["active"] * 5 +
                                       ["resized", "stopped", "error"]),
                "swap_mb": rng.choice([None, None, 512, 1024, 0]),
                "ephemeral_gb": rng.choice([[], [], [1], [20], [1, 20],
                                            [20, 1]])}
        inst["name"] = "instance-%08x" % inst["id"]
        sc["instances"].append(inst)
        return inst

    def disk_of(inst):
        """What an instance's `disk` is backed by (a _base name, None)."""
        fps = [sha1(inst["image_ref"])] if inst["image_ref"] else []
        own = [n for n in names if fps and n.startswith(fps[0])
               and bucket(n) in ("original", "resized")
               and not n.endswith((".info", ".sha1"))]
        r = rng.random()
        if own and r < 0.6:
            return rng.choice(own)
        # Any name but a sidecar's (feature sidecar_as_backing).
        usable = [n for n in names if not n.endswith((".info", ".sha1"))]
        if usable and r < 0.8:
            return rng.choice(usable)
        if r < 0.9:
            return sha1(new_uuid(rng))  # missing from _base
        return None

    def directory(inst, name, resize=False):
        d = {"name": name, "disks": []}
        if rng.random() < 0.9:
            d["disks"].append({"name": "disk", "backing": disk_of(inst),
                               "abs": rng.random() < 0.5})
        if inst["ephemeral_gb"] and rng.random() < 0.7:
            b = "ephemeral_%d_%s" % (inst["ephemeral_gb"][0], eph_ext(label))
            d["disks"].append({"name": "disk.local", "backing": b,
                               "abs": True})
        if inst["swap_mb"] and rng.random() < 0.7:
            d["disks"].append({"name": "disk.swap",
                               "backing": "swap_%d" % inst["swap_mb"],
                               "abs": True})
        sc["dirs"].append(d)

    for _ in range(rng.randint(0, 5)):
        inst = instance(rng.choice([HOST] * 3 + recent))
        if rng.random() < 0.7:
            directory(inst, inst["uuid"] if rng.random() < 0.85
                      else inst["name"])
            resizing = inst["task_state"] in RESIZE_TASKS or \
                inst["vm_state"] == "resized"
            if (resizing and rng.random() < 0.6) or rng.random() < 0.1:
                directory(inst, inst["uuid"] + "_resize")
    if rng.random() < 0.2:
        # A directory no instance of the inventory names.
        ghost = {"uuid": new_uuid(rng), "image_ref": rng.choice(pool),
                 "ephemeral_gb": [], "swap_mb": None}
        directory(ghost, ghost["uuid"])

    old = 10 * max(orig, resized)
    if feature in ("off_storage_host", "hostless_instance"):
        # An image only an instance Nova's query leaves out uses: on a
        # host that does not share the storage (absent from or stale in
        # compute_nodes), or on no host at all.
        img = new_uuid(rng)
        add(sha1(img), age=old)
        nodes = sc["compute_nodes"]
        if feature == "hostless_instance":
            host = None
        elif nodes is not None and rng.random() < 0.5:
            host = "compute-3"
            nodes[host] = NOW - DAY - rng.randint(0, DAY)
        else:
            host = "compute-9"
        inst = instance(host)
        inst["image_ref"] = img
        inst["kernel_id"] = inst["ramdisk_id"] = None
        if rng.random() < 0.5:
            directory(inst, inst["uuid"])
    elif feature == "subsecond_mtime":
        # An unused original modified half a second after now - threshold.
        add(sha1(new_uuid(rng)), age=orig - 0.5)
    elif feature == "empty_image_ref":
        # A boot-from-volume instance whose image_ref is "" (as Nova
        # stores it) beside a file named SHA-1("").
        add(sha1(""), age=old)
        inst = instance(HOST)
        inst["image_ref"] = ""
    elif feature == "base_symlink":
        # 40-character links: to a file outside _base and to one inside,
        # their own mtimes old, their targets' new (or the reverse).
        young, aged = 0, old
        if rng.random() < 0.5:
            young, aged = aged, young
        sc["outside"].append({"name": "target", "size": 512, "age": young})
        add(sha1(new_uuid(rng)), link="../../../outside/target", age=aged)
        inside = sha1(new_uuid(rng))
        add(inside, age=young)
        add(sha1(new_uuid(rng)), link=inside, age=aged)
    elif feature == "base_dangling_link":
        # A 40-character link to nothing.
        add(sha1(new_uuid(rng)), link="../../../outside/nothing", age=old)
    elif feature == "sidecar_as_backing":
        # An instance disk backed by <fp>.info, <fp> itself absent.
        img = new_uuid(rng)
        add(sha1(img) + ".info", age=old)
        inst = instance(HOST)
        sc["dirs"].append({"name": inst["uuid"], "disks": [
            {"name": "disk", "backing": sha1(img) + ".info", "abs": True}]})
    elif feature == "backing_chain":
        # disk -> <fpA>_10 (qcow2) -> <fpB>, B used by no instance.
        a, b = new_uuid(rng), new_uuid(rng)
        add(sha1(b), age=old)
        add(sha1(a) + "_10", backing=sha1(b), age=old)
        inst = instance(HOST)
        inst["image_ref"] = a
        sc["dirs"].append({"name": inst["uuid"], "disks": [
            {"name": "disk", "backing": sha1(a) + "_10", "abs": True}]})
    return sc


def qcow2(path, backing, fmt, cache):
    """A qcow2 made by qemu-img at `path` backed by `backing` (a template
    per backing string and format, copied: a relative name serves both
    trees and every scenario)."""
    key = (backing, fmt)
    if key not in cache:
        tmpl = os.path.join(cache["dir"], "t%d" % len(cache))
        cmd = ["qemu-img", "create", "-q", "-f", "qcow2"]
        if backing is not None:
            cmd += ["-u", "-b", backing, "-F", fmt]
        subprocess.run(cmd + [tmpl, "1G"], check=True)
        cache[key] = tmpl
    shutil.copyfile(cache[key], path)


def materialize(sc, top, cache):
    """Build the scenario's instances path at top/instances."""
    root = os.path.join(top, "instances")
    base = os.path.join(root, "_base")
    outside = os.path.join(os.path.dirname(top), "outside")
    os.makedirs(base)
    now = sc["now"]
    times = []
    os.makedirs(outside, exist_ok=True)
    for o in sc["outside"]:
        p = os.path.join(outside, o["name"])
        if not os.path.exists(p):
            with open(p, "wb") as f:
                f.truncate(o["size"])
        os.utime(p, (now - o["age"], now - o["age"]))
    for f in sc["base"]:
        p = os.path.join(base, f["name"])
        if f.get("dir"):
            os.makedirs(p)
        elif "link" in f:
            os.symlink(f["link"], p)
        elif "backing" in f:
            qcow2(p, f["backing"], "raw", cache)
        else:
            with open(p, "wb") as fh:
                fh.truncate(f["size"])
        times.append((p, f["age"], "link" not in f))
    for d in sc["dirs"]:
        dp = os.path.join(root, d["name"])
        os.makedirs(dp, exist_ok=True)
        for k in d["disks"]:
            b = k["backing"]
            if b is not None:
                b = os.path.join(base, b) if k["abs"] else "../_base/" + b
            fmt = "qcow2" if any(f["name"] == k["backing"] and
                                 "backing" in f for f in sc["base"]) \
                else "raw"
            qcow2(os.path.join(dp, k["name"]), b, fmt, cache)
    for p, age, follow in times:
        t = now - age
        os.utime(p, ns=(int(t * 1e9), int(t * 1e9)),
                 follow_symlinks=follow)
    if sc["compute_nodes"] is not None:
        with open(os.path.join(root, "compute_nodes"), "w") as fh:
            json.dump(sc["compute_nodes"], fh)
    return root


class Nova:
    """Nova 34's libvirt image cache manager, configured per scenario."""

    def __init__(self):
        import nova.conf
        from nova import context, objects
        objects.register_all()
        self.CONF = nova.conf.CONF
        self.CONF([], project="nova", default_config_files=[])
        import nova.privsep
        # As Nova's own tests (PrivsepFixture): entrypoints run in-process.
        nova.privsep.sys_admin_pctxt.set_client_mode(False)
        from nova.virt.libvirt import imagecache
        from nova.virt import storage_users
        self.objects = objects
        self.imagecache = imagecache
        self.storage_users = storage_users
        self.ctx = context.get_admin_context()
        self.bdms = {}
        objects.BlockDeviceMappingList.bdms_by_instance_uuid = classmethod(
            lambda cls, ctx, uuids: {u: self.bdms[u] for u in uuids
                                     if u in self.bdms})

    def bdm_list(self, inst):
        out = []
        o = self.objects

        def bdm(dev, size, guest_format):
            return o.BlockDeviceMapping(
                instance_uuid=inst["uuid"], source_type="blank",
                destination_type="local", guest_format=guest_format,
                volume_size=size, device_name=dev, disk_bus=None,
                boot_index=-1, device_type="disk", no_device=False,
                encrypted=False, encryption_secret_uuid=None,
                encryption_format=None, encryption_options=None)
        if inst["swap_mb"] is not None:
            out.append(bdm("/dev/vdz", inst["swap_mb"], "swap"))
        for n, gb in enumerate(inst["ephemeral_gb"]):
            out.append(bdm("/dev/vd%s" % "bcdefg"[n], gb, None))
        return out

    def answer(self, sc, root):
        C = self.CONF
        C.set_override("instances_path", root)
        C.set_override("host", sc["host"])
        C.set_override("default_ephemeral_format", sc["ephemeral_format"])
        C.set_override("lock_path", os.path.join(root, "locks"),
                       group="oslo_concurrency")
        for k, v in (("subdirectory_name", "_base"),
                     ("remove_unused_base_images", True),
                     ("remove_unused_original_minimum_age_seconds",
                      sc["original_age"]),
                     ("remove_unused_resized_minimum_age_seconds",
                      sc["resized_age"])):
            C.set_override(k, v, group="image_cache")
        clock = types.SimpleNamespace(time=lambda: float(sc["now"]))
        self.imagecache.time = clock
        self.storage_users.time = clock
        # ComputeManager._run_image_cache_manager_pass, minus the query.
        self.storage_users.register_storage_use(root, C.host)
        nodes = self.storage_users.get_storage_users(root)
        insts = []
        self.bdms = {}
        for i in sc["instances"]:
            if i["host"] not in nodes:
                continue
            insts.append(self.objects.Instance(
                uuid=i["uuid"], id=i["id"], host=i["host"],
                image_ref=i["image_ref"], kernel_id=i["kernel_id"],
                ramdisk_id=i["ramdisk_id"], task_state=i["task_state"],
                vm_state=i["vm_state"], os_type=None))
            self.bdms[i["uuid"]] = self.bdm_list(i)
        base = os.path.join(root, "_base")
        before = sorted(os.listdir(base))
        # Nova's own buckets (_scan_base_images only lists and stats).
        scan = self.imagecache.ImageCacheManager()
        scan._scan_base_images(base)
        scanned = {os.path.basename(p) for p in scan.unexplained_images}
        m = self.imagecache.ImageCacheManager()
        error = None
        try:
            m.update(self.ctx, insts)
        except Exception as e:  # the pass aborts (fail-closed)
            error = "%s: %s" % (type(e).__name__, e)
        after = set(os.listdir(base))
        active = {os.path.basename(p) for p in m.active_base_files}
        removable = {os.path.basename(p) for p in m.removable_base_files}
        files = {}
        for n in before:
            if n in scan.back_swap_images:
                b, use = "swap", n in m.used_swap_images
            elif n in scan.back_ephemeral_images:
                b, use = "ephemeral", n in m.used_ephemeral_images
            elif n in scanned:
                b, use = "image", n in active
            else:
                b, use = None, None
            # "active": what Nova logs as Active base files, whatever the
            # bucket (a backing file of a current instance's disk).
            files[n] = {"bucket": b, "in_use": use,
                        "active": bool(use) or n in active,
                        "removed": n not in after}
        del removable
        return {"error": error, "nodes": sorted(nodes),
                "used_images": sorted(m.used_images),
                "files": files}


NOVA = None
CACHE = None


def init(work):
    """A worker: Nova configured once, its own qcow2 templates."""
    global NOVA, CACHE
    logging.disable(logging.CRITICAL)
    NOVA = Nova()
    CACHE = {"dir": os.path.join(work, "templates-%d" % os.getpid())}
    os.makedirs(CACHE["dir"], exist_ok=True)


def scenario(job):
    seed, i, work = job
    sc = generate(seed, i)
    top = os.path.join(work, sc["id"])
    # Both builds at the same path (Nova's renamed away after its pass),
    # so one qcow2 template with an absolute backing path serves both.
    tree = os.path.join(top, "tree")
    answer = NOVA.answer(sc, materialize(sc, tree, CACHE))
    os.rename(tree, os.path.join(top, "nova"))
    root = materialize(sc, tree, CACHE)
    inv = os.path.join(top, "instances.jsonl")
    with open(inv, "w") as fh:
        for inst in sc["instances"]:
            rec = {k: inst[k] for k in (
                "uuid", "name", "host", "image_ref", "kernel_id",
                "ramdisk_id", "task_state", "vm_state", "swap_mb",
                "ephemeral_gb")}
            fh.write(json.dumps(rec) + "\n")
    out = {k: sc[k] for k in ("id", "features", "now", "host",
                              "original_age", "resized_age")}
    out.update(ephemeral_format=sc["ephemeral_format"] or "vfat",
               dir=root, instances=inv, nova=answer)
    return json.dumps(out)


def run(args):
    import multiprocessing
    os.makedirs(args.work, exist_ok=True)
    jobs = [(args.seed, i, args.work) for i in range(args.count)]
    n = args.jobs or (os.cpu_count() or 1) + 1
    # Forked workers, each with its own CONF; output in scenario order.
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(n, initializer=init, initargs=(args.work,)) as pool:
        for line in pool.imap(scenario, jobs, chunksize=4):
            print(line, flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--seed", required=True)
    r.add_argument("--count", type=int, default=500)
    r.add_argument("--work", required=True)
    r.add_argument("--jobs", type=int, default=0,
                   help="worker processes (default: cores + 1)")
    args = p.parse_args()
    {"run": run}[args.cmd](args)


if __name__ == "__main__":
    main()
