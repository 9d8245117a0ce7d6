"""Cinder's image acceptance, run in-process on files (the Cinder
differential, tests/tests/upstream_cinder.rs; README.md beside it says
what is stubbed).

Reads JSON lines {"id", "path", "disk_format", "size_gb"} on stdin and
writes one JSON line per case: {"id", "accepted", "reason", "message",
"file_format", "virtual_size"}. The steps are those of
image_utils.fetch_to_volume_format after the download, with Cinder's own
functions: qemu_img_info (its format inspector, then qemu-img info -f
<detected>), check_virtual_size when a volume size is given, the
file_format and backing_file checks, then check_image_format with the
claimed disk_format as convert_image calls it.
"""
import json
import logging
import sys

logging.disable(logging.CRITICAL)

from oslo_concurrency import processutils  # noqa: E402
from oslo_config import cfg  # noqa: E402

import cinder.privsep  # noqa: E402
from cinder import exception  # noqa: E402
from cinder.image import image_utils  # noqa: E402

cfg.CONF([], project="cinder", default_config_files=[])
# The inspector is a privsep entrypoint: run it in this process (as
# Cinder's own unit tests do) instead of a root daemon.
cinder.privsep.sys_admin_pctxt.set_client_mode(False)


def reason_of(message):
    """The class of an ImageUnacceptable raised by check_image_format."""
    if "claimed to be" in message:
        return "format_mismatch"
    if "VMDK" in message:
        return "vmdk_create_type"
    if "data file" in message:
        return "qcow2_data_file"
    if "format-specific" in message:
        return "no_format_specific"
    return "unacceptable"


def judge(case):
    out = {"id": case["id"], "accepted": False, "reason": None,
           "message": None, "file_format": None, "virtual_size": None}

    def refuse(reason, message):
        out["reason"] = reason
        out["message"] = str(message)[:300]
        return out

    path = case["path"]
    try:
        data = image_utils.qemu_img_info(path, run_as_root=False)
    except exception.Invalid as e:
        return refuse("safety_check", e)
    except processutils.ProcessExecutionError as e:
        return refuse("qemu_img_failed", e.stderr or e)
    except Exception as e:  # noqa: BLE001 - any crash refuses the image
        return refuse("error:" + type(e).__name__, e)
    out["file_format"] = data.file_format
    out["virtual_size"] = data.virtual_size
    try:
        if case.get("size_gb") is not None:
            image_utils.check_virtual_size(data.virtual_size, case["size_gb"], "x")
    except exception.ImageUnacceptable as e:
        return refuse("size", e)
    except Exception as e:  # noqa: BLE001
        return refuse("error:" + type(e).__name__, e)
    if data.file_format is None:
        return refuse("parse_failed", "'qemu-img info' parsing failed.")
    if data.backing_file is not None:
        return refuse("backing_file", data.backing_file)
    try:
        image_utils.check_image_format(
            path, image_utils.fixup_disk_format(case["disk_format"]), "x",
            data, run_as_root=False)
    except exception.ImageUnacceptable as e:
        return refuse(reason_of(str(e)), e)
    except Exception as e:  # noqa: BLE001
        return refuse("error:" + type(e).__name__, e)
    out["accepted"] = True
    return out


def main():
    for line in sys.stdin:
        if line.strip():
            print(json.dumps(judge(json.loads(line))), flush=True)


if __name__ == "__main__":
    main()
