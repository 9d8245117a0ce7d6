"""The competitor in `make bench`: what an operator would script today to
turn saved qemu-img info output into JSON lines, using the parser OpenStack
services use (oslo.utils QemuImgInfo; 9.2.0 is the last release that still
reads the human text). Reads stdin, writes one JSON line per image."""
import json
import re
import sys
import warnings

warnings.simplefilter("ignore")
from oslo_utils.imageutils import QemuImgInfo  # noqa: E402

fmt = sys.argv[1]
data = sys.stdin.buffer.read().decode("utf-8", "replace")
# One document per image, as a caller would hold them.
split = r"(?m)^(?=\{)" if fmt == "json" else r"(?m)^(?=image: )"
out = sys.stdout
for doc in re.split(split, data):
    if not doc.strip():
        continue
    i = QemuImgInfo(doc, format=fmt)
    out.write(json.dumps({"info": {
        "filename": i.image, "format": i.file_format,
        "virtual_size": i.virtual_size, "actual_size": i.disk_size,
        "cluster_size": i.cluster_size, "backing_filename": i.backing_file,
        "backing_filename_format": i.backing_file_format,
        "encrypted": bool(i.encrypted), "snapshots": i.snapshots,
        "format_specific": i.format_specific}}) + "\n")
