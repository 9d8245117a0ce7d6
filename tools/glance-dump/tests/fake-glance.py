#!/usr/bin/env python3
"""A tiny fake Glance for glance-dump's tests: the listing misbehaviours a
real Glance never shows. It listens on 127.0.0.1 (an ephemeral port, printed
as the first line of stdout) and appends every request's raw target (path
and query exactly as sent) to the file named by argv[1].

The endpoint's first path segment picks the behaviour:
  /same-next/    every page's next link is the same
  /same-marker/  every next link is new, but its marker is always the same
  /one-page/     one page with no next link
  /bad-ids/      one page of queued images whose ids are no file names
  /no-list/      versions, but the listing answers 404
Hidden images (os_hidden=true) are none, but in the looping modes.
Each mode ends its listing after 200 pages, so a client that loops still
ends (the test counts the pages it asked for).
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

LOG = sys.argv[1]
PAGES = {}


def image(id_, name):
    return {"id": id_, "name": name, "status": "queued", "visibility": "private",
            "os_hidden": False, "size": None, "checksum": None}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def send_json(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        with open(LOG, "a", encoding="utf-8") as f:
            f.write(self.path + "\n")
        parts = self.path.split("?", 1)[0].split("/")
        mode, rest = parts[1], "/".join(parts[2:])
        if rest == "":
            return self.send_json(300, {"versions": [{"id": "v2.9", "status": "CURRENT"}]})
        if rest != "v2/images" or mode == "no-list":
            return self.send_json(404, {"message": "no such thing", "code": 404})
        n = PAGES.get(mode, 0) + 1
        PAGES[mode] = n
        page = {"images": [image("00000000-0000-4000-8000-%012d" % n, "page %d" % n)]}
        hidden = "os_hidden=true" in self.path
        if mode == "one-page" or (hidden and mode not in ("same-next", "same-marker")):
            page["images"] = []
        elif mode == "bad-ids":
            page["images"] = [image(i, "bad %r" % i) for i in
                              ["a/b", "..", ".", "", "x\ny", "nul\0", "../../etc/evil"]]
            page["images"].append(image("00000000-0000-4000-8000-000000000001", "good"))
        elif n < 200 and mode == "same-next":
            page["next"] = "/v2/images?limit=1&marker=00000000-0000-4000-8000-000000000001"
        elif n < 200 and mode == "same-marker":
            page["next"] = "/v2/images?limit=1&marker=00000000-0000-4000-8000-000000000001&n=%d" % n
        self.send_json(200, page)


server = HTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
