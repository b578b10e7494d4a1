#!/usr/bin/env python3
"""Fidelity probes: run the same requests against a real kube-apiserver and the emulator, diff.

    tests/apiserver/fidelity.py --kubeconfig /tmp/fid/kc   > real.jsonl
    tests/apiserver/fidelity.py --kubeconfig /tmp/fid/ekc  > emu.jsonl
    tests/apiserver/fidelity.py --server http://127.0.0.1:PORT --token T > emu.jsonl
    diff real.jsonl emu.jsonl

Python 3.11 standard library only. Each probe prints one JSON line: {"probe": name, "status":
code, ...the relevant parts of the answer}. Values that differ from run to run (uids,
timestamps, resourceVersions, the probe namespace's random suffix) are normalised so that the two
outputs diff cleanly; the probe "rv.format" reports what resourceVersions look like.

Both kubeconfig flavours are read minimally: the real server's JSON (as written by
tests/apiserver/run) and the emulator's YAML (`kopf emulator --kubeconfig`): the first cluster's
server and certificate-authority-data, the first user's token.
"""

import argparse
import base64
import json
import os
import re
import socket
import ssl
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

# The CRD of examples/crd.yaml (the KopfExample), as JSON (no YAML parser in the stdlib).
KOPFEXAMPLE_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "kopfexamples.kopf.dev"},
    "spec": {
        "scope": "Namespaced",
        "group": "kopf.dev",
        "names": {"kind": "KopfExample", "plural": "kopfexamples", "singular": "kopfexample",
                  "shortNames": ["kex", "kexes"]},
        "versions": [{
            "name": "v1", "served": True, "storage": True,
            "subresources": {"status": {}},
            "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            }}},
            "additionalPrinterColumns": [
                {"name": "Duration", "type": "string", "priority": 0, "jsonPath": ".spec.duration"},
            ],
        }],
    },
}

# A CRD with a strict structural schema: what is pruned, what is kept, what is invalid.
STRICT_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "fidstricts.fid.kopf.dev"},
    "spec": {
        "scope": "Namespaced",
        "group": "fid.kopf.dev",
        "names": {"kind": "FidStrict", "plural": "fidstricts", "singular": "fidstrict"},
        "versions": [{
            "name": "v1", "served": True, "storage": True,
            "subresources": {"status": {}},
            "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                "spec": {"type": "object", "properties": {
                    "count": {"type": "integer"},
                    "mode": {"type": "string", "default": "auto"},
                    "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                    "tags": {"type": "array", "items": {"type": "object", "properties": {
                        "k": {"type": "string"}}}},
                }},
                "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
            }}},
        }],
    },
}

KEX = "/apis/kopf.dev/v1/namespaces/{ns}/kopfexamples"
FID = "/apis/fid.kopf.dev/v1/namespaces/{ns}/fidstricts"
CMS = "/api/v1/namespaces/{ns}/configmaps"
PODS = "/api/v1/namespaces/{ns}/pods"

MERGE = "application/merge-patch+json"
JSONPATCH = "application/json-patch+json"
SMP = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"


def read_kubeconfig(path):
    text = open(path).read()
    try:
        doc = json.loads(text)
        cluster = doc["clusters"][0]["cluster"]
        user = doc["users"][0]["user"]
        return cluster["server"], user.get("token"), cluster.get("certificate-authority-data")
    except ValueError:
        pass

    def field(name):
        m = re.search(r"^\s*" + re.escape(name) + r":\s*(\S+)\s*$", text, re.M)
        return m.group(1).strip("'\"") if m else None

    return field("server"), field("token"), field("certificate-authority-data")


class Client:
    def __init__(self, server, token, ca_data=None, ca_file=None):
        self.server = server.rstrip("/")
        self.token = token
        self.ctx = None
        if self.server.startswith("https"):
            if ca_data:
                pem = base64.b64decode(ca_data).decode()
                self.ctx = ssl.create_default_context(cadata=pem)
            elif ca_file:
                self.ctx = ssl.create_default_context(cafile=ca_file)
            else:
                self.ctx = ssl._create_unverified_context()

    def request(self, method, path, body=None, ctype="application/json", accept="application/json",
                timeout=30):
        """(status, headers, body as JSON or text)."""
        data = None
        if body is not None:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        req = urllib.request.Request(self.server + path, data=data, method=method)
        if self.token:
            req.add_header("Authorization", "Bearer " + self.token)
        if data is not None:
            req.add_header("Content-Type", ctype)
        req.add_header("Accept", accept)
        req.add_header("User-Agent", "fidelity-probe/1.0")
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=timeout) as r:
                return r.status, headers(r.headers), parse(r.read())
        except urllib.error.HTTPError as e:
            return e.code, headers(e.headers), parse(e.read())

    def stream(self, path, seconds):
        """Read a watch stream for up to `seconds`: (status, [(t, event)], closed_by_server)."""
        req = urllib.request.Request(self.server + path)
        if self.token:
            req.add_header("Authorization", "Bearer " + self.token)
        req.add_header("Accept", "application/json")
        start = time.monotonic()
        events = []
        try:
            r = urllib.request.urlopen(req, context=self.ctx, timeout=seconds)
        except urllib.error.HTTPError as e:
            return e.code, [(0.0, parse(e.read()))], True
        closed = False
        try:
            while True:
                line = r.readline()
                if not line:
                    closed = True
                    break
                events.append((round(time.monotonic() - start, 1), parse(line)))
                if time.monotonic() - start > seconds:
                    break
        except (socket.timeout, TimeoutError):
            pass
        finally:
            r.close()
        return r.status, events, closed


def headers(h):
    """Header names in canonical case (servers differ), repeated headers joined."""
    out = {}
    for k, v in h.items():
        k = "-".join(p.capitalize() for p in k.split("-"))
        out[k] = out[k] + ", " + v if k in out else v
    return out


def parse(raw):
    if isinstance(raw, bytes):
        raw = raw.decode(errors="replace")
    try:
        return json.loads(raw)
    except ValueError:
        return raw.strip()[:300]


NS = None
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
UID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def norm(v, key=None):
    """Normalise values that differ between runs and servers for reasons nobody cares about."""
    if isinstance(v, dict):
        return {k: norm(x, k) for k, x in sorted(v.items())}
    if isinstance(v, list):
        return [norm(x) for x in v]
    if isinstance(v, str):
        if key in ("resourceVersion",) and v.isdigit():
            return "<rv>"
        if key == "continue" and v:
            return "<token>"
        if TS.match(v):
            return "<ts>"
        if UID.match(v):
            return "<uid>"
        return v.replace(NS, "$NS") if NS else v
    return v


def status_body(b):
    """The parts of a Status that clients read."""
    if not isinstance(b, dict):
        return {"body": b}
    out = {k: b.get(k) for k in ("kind", "status", "reason", "code", "details", "message") if k in b}
    return out


def emit(probe, code, **parts):
    line = {"probe": probe, "status": code}
    line.update(parts)
    print(json.dumps(norm(line), sort_keys=True), flush=True)


def meta(o, *keys):
    m = (o or {}).get("metadata", {}) if isinstance(o, dict) else {}
    return {k: m.get(k) for k in keys}


def cm(name, data=None, **metadata):
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, **metadata},
            "data": data or {}}


def kex(name, spec=None, **metadata):
    return {"apiVersion": "kopf.dev/v1", "kind": "KopfExample", "metadata": {"name": name, **metadata},
            "spec": spec or {}}


def ensure_crd(c, crd):
    name = crd["metadata"]["name"]
    code, _, _ = c.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    if code not in (201, 409):
        sys.exit(f"cannot create CRD {name}: {code}")
    group = crd["spec"]["group"]
    plural = crd["spec"]["names"]["plural"]
    for _ in range(100):
        code, _, b = c.request("GET", f"/apis/{group}/v1/namespaces/default/{plural}")
        if code == 200:
            return
        time.sleep(0.1)
    sys.exit(f"CRD {name} not served")


def main():
    global NS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kubeconfig")
    ap.add_argument("--server")
    ap.add_argument("--token")
    ap.add_argument("--ca")
    ap.add_argument("--only", help="run only probes whose name contains this")
    a = ap.parse_args()
    if a.kubeconfig:
        server, token, ca = read_kubeconfig(a.kubeconfig)
        c = Client(server, a.token or token, ca_data=ca, ca_file=a.ca)
    elif a.server:
        c = Client(a.server, a.token, ca_file=a.ca)
    else:
        ap.error("--kubeconfig or --server is required")

    NS = "fid-" + os.urandom(3).hex()
    code, _, b = c.request("POST", "/api/v1/namespaces",
                           {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    assert code == 201, (code, b)
    # Pods need the namespace's default ServiceAccount (no controller manager creates it here).
    c.request("POST", f"/api/v1/namespaces/{NS}/serviceaccounts",
              {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}})
    ensure_crd(c, KOPFEXAMPLE_CRD)
    ensure_crd(c, STRICT_CRD)

    probes = [(n, f) for n, f in globals().items() if n.startswith("probe_")]
    for name, f in probes:
        if a.only and a.only not in name:
            continue
        try:
            f(c, NS)
        except Exception as e:  # a crashing probe is a finding too
            emit(name[6:].replace("_", "."), -1, error=repr(e))
    c.request("DELETE", f"/api/v1/namespaces/{NS}")


# ---------------------------------------------------------------- status codes and bodies


def probe_status_404(c, ns):
    code, _, b = c.request("GET", CMS.format(ns=ns) + "/missing")
    emit("status.404.configmap", code, body=status_body(b))
    code, _, b = c.request("GET", KEX.format(ns=ns) + "/missing")
    emit("status.404.cr", code, body=status_body(b))
    code, _, b = c.request("GET", f"/api/v1/namespaces/{ns}/nonsense")
    emit("status.404.unknown-resource", code, body=status_body(b))
    code, _, b = c.request("GET", "/apis/nonsense.example.com/v1/things")
    emit("status.404.unknown-group", code, body=status_body(b))
    code, _, b = c.request("POST", CMS.format(ns="no-such-ns"), cm("x"))
    emit("status.404.create-in-missing-namespace", code, body=status_body(b))
    code, _, b = c.request("DELETE", CMS.format(ns=ns) + "/missing")
    emit("status.404.delete", code, body=status_body(b))
    code, _, b = c.request("PATCH", CMS.format(ns=ns) + "/missing", {"data": {"a": "1"}}, MERGE)
    emit("status.404.patch", code, body=status_body(b))


def probe_status_409_exists(c, ns):
    c.request("POST", CMS.format(ns=ns), cm("dup"))
    code, _, b = c.request("POST", CMS.format(ns=ns), cm("dup"))
    emit("status.409.already-exists.configmap", code, body=status_body(b))
    c.request("POST", KEX.format(ns=ns), kex("dup"))
    code, _, b = c.request("POST", KEX.format(ns=ns), kex("dup"))
    emit("status.409.already-exists.cr", code, body=status_body(b))


def probe_status_422(c, ns):
    code, _, b = c.request("POST", CMS.format(ns=ns), cm("Bad_Name"))
    emit("status.422.invalid-name", code, body=status_body(b))
    code, _, b = c.request("POST", KEX.format(ns=ns), kex("Bad_Name"))
    emit("status.422.invalid-name.cr", code, body=status_body(b))
    code, _, b = c.request("POST", FID.format(ns=ns),
                           {"apiVersion": "fid.kopf.dev/v1", "kind": "FidStrict", "metadata": {"name": "typed"},
                            "spec": {"count": "three"}})
    emit("status.422.schema-type.cr", code, body=status_body(b))
    code, _, b = c.request("POST", CMS.format(ns=ns), {"apiVersion": "v1", "kind": "ConfigMap",
                                                       "metadata": {"name": "lbl", "labels": {"a": "b c"}}})
    emit("status.422.invalid-label-value", code, body=status_body(b))
    code, _, b = c.request("POST", CMS.format(ns=ns), cm("withrv", resourceVersion="5"))
    emit("create.with-resourceVersion", code, body=status_body(b) if code >= 400 else meta(b, "name"))


def probe_status_409_conflict(c, ns):
    _, _, o = c.request("POST", CMS.format(ns=ns), cm("stale", {"a": "1"}))
    old = json.loads(json.dumps(o))
    o["data"] = {"a": "2"}
    code, _, _ = c.request("PUT", CMS.format(ns=ns) + "/stale", o)
    old["data"] = {"a": "3"}
    code, _, b = c.request("PUT", CMS.format(ns=ns) + "/stale", old)
    emit("put.stale-resourceVersion", code, body=status_body(b))
    code, _, b = c.request("PATCH", CMS.format(ns=ns) + "/stale",
                           {"metadata": {"resourceVersion": old["metadata"]["resourceVersion"]}, "data": {"a": "4"}},
                           MERGE)
    emit("patch.stale-resourceVersion", code, body=status_body(b))
    code, _, b = c.request("PUT", CMS.format(ns=ns) + "/stale", cm("stale", {"a": "5"}))
    emit("put.without-resourceVersion.configmap", code,
         body=status_body(b) if code >= 400 else {"data": b.get("data")})
    c.request("POST", KEX.format(ns=ns), kex("norv", {"a": 1}))
    code, _, b = c.request("PUT", KEX.format(ns=ns) + "/norv", kex("norv", {"a": 2}))
    emit("put.without-resourceVersion.cr", code,
         body=status_body(b) if code >= 400 else {"spec": b.get("spec")})
    code, _, b = c.request("PUT", CMS.format(ns=ns) + "/missing-put", cm("missing-put"))
    emit("put.missing-object", code, body=status_body(b) if code >= 400 else meta(b, "name"))
    code, _, b = c.request("DELETE", CMS.format(ns=ns) + "/stale",
                           {"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"resourceVersion": "1"}})
    emit("delete.stale-precondition", code, body=status_body(b))


# ---------------------------------------------------------------- resourceVersions and lists


def probe_rv(c, ns):
    rvs = []
    for i in range(3):
        _, _, o = c.request("POST", CMS.format(ns=ns), cm(f"rv{i}"))
        rvs.append(o["metadata"]["resourceVersion"])
    _, _, l = c.request("GET", CMS.format(ns=ns))
    emit("rv.format", 200, decimal=all(r.isdigit() for r in rvs),
         increasing=[int(x) for x in rvs] == sorted(int(x) for x in rvs),
         consecutive=int(rvs[2]) - int(rvs[0]) == 2,
         list_rv_is_max=int(l["metadata"]["resourceVersion"]) >= int(rvs[2]))
    code, _, b = c.request("GET", CMS.format(ns=ns) + "?resourceVersion=0")
    emit("list.rv0", code, kind=b.get("kind"), items=len(b.get("items", [])),
         rv_decimal=b.get("metadata", {}).get("resourceVersion", "").isdigit())
    cur = l["metadata"]["resourceVersion"]
    code, _, b = c.request("GET", CMS.format(ns=ns) + f"?resourceVersion={cur}&resourceVersionMatch=NotOlderThan")
    emit("list.rvm-NotOlderThan", code, items=len(b.get("items", [])) if code == 200 else status_body(b))
    # Exact: the state at an older resourceVersion (before rv2 existed).
    code, _, b = c.request("GET", CMS.format(ns=ns) + f"?resourceVersion={rvs[1]}&resourceVersionMatch=Exact")
    emit("list.rvm-Exact-older", code,
         names=sorted(i["metadata"]["name"] for i in b.get("items", [])) if code == 200 else status_body(b),
         rv=b.get("metadata", {}).get("resourceVersion") == rvs[1] if code == 200 else None)
    code, _, b = c.request("GET", CMS.format(ns=ns) + "?resourceVersionMatch=NotOlderThan")
    emit("list.rvm-without-rv", code, body=status_body(b) if code >= 400 else len(b.get("items", [])))
    code, _, b = c.request("GET", CMS.format(ns=ns) + "?resourceVersion=abc")
    emit("list.rv-garbage", code, body=status_body(b) if code >= 400 else len(b.get("items", [])))
    t = time.monotonic()
    code, _, b = c.request("GET", CMS.format(ns=ns) + f"?resourceVersion={int(cur) + 100000}"
                           "&resourceVersionMatch=NotOlderThan", timeout=15)
    emit("list.rv-future", code, seconds=round(time.monotonic() - t),
         body=status_body(b) if code >= 400 else len(b.get("items", [])))
    code, _, b = c.request("GET", CMS.format(ns=ns) + "/rv0?resourceVersion=0")
    emit("get.rv0", code, name=meta(b, "name"))


def probe_pagination(c, ns):
    for i in range(5):
        c.request("POST", CMS.format(ns=ns), cm(f"page{i}", labels={"page": "yes"}))
    q = CMS.format(ns=ns) + "?labelSelector=page%3Dyes&limit=2"
    code, _, b = c.request("GET", q)
    m = b.get("metadata", {})
    emit("list.page1.with-selector", code, items=len(b["items"]), has_continue=bool(m.get("continue")),
         remainingItemCount=m.get("remainingItemCount"))
    # Without a selector (the namespace also holds other configmaps: count them first).
    _, _, full = c.request("GET", CMS.format(ns=ns))
    total = len(full["items"])
    code, _, b = c.request("GET", CMS.format(ns=ns) + "?limit=2")
    m = b.get("metadata", {})
    emit("list.page1.no-selector", code, items=len(b["items"]), has_continue=bool(m.get("continue")),
         remaining_is_rest=m.get("remainingItemCount") == total - 2)
    names = [i["metadata"]["name"] for i in b["items"]]
    token = m.get("continue")
    pages = 1
    while token:
        code, _, b = c.request("GET", CMS.format(ns=ns) + "?limit=2&continue=" + urllib.parse.quote(token))
        names += [i["metadata"]["name"] for i in b["items"]]
        token = b["metadata"].get("continue")
        pages += 1
        last = b["metadata"]
    emit("list.paged-all", 200, complete=sorted(names) == sorted(i["metadata"]["name"] for i in full["items"]),
         pages=pages == (total + 1) // 2, last_page_meta=sorted(last.keys()))
    code, _, b = c.request("GET", CMS.format(ns=ns) + "?limit=2&continue=garbage")
    emit("list.continue-garbage", code, body=status_body(b))
    code, _, b = c.request("GET", CMS.format(ns=ns) + "?limit=2&resourceVersion=0")
    emit("list.limit-with-rv0", code, items=len(b.get("items", [])) == 2,
         has_continue=bool(b.get("metadata", {}).get("continue")))
    code, _, b = c.request("GET", CMS.format(ns=ns) + "?limit=-1")
    emit("list.limit-negative", code, body=status_body(b) if code >= 400 else len(b.get("items", [])))


def probe_field_selectors(c, ns):
    c.request("POST", CMS.format(ns=ns), cm("fs-a"))
    c.request("POST", CMS.format(ns=ns), cm("fs-b"))
    for sel in ["metadata.name=fs-a", "metadata.name!=fs-a", f"metadata.namespace={ns}",
                "metadata.namespace=other", "metadata.name==fs-b"]:
        code, _, b = c.request("GET", CMS.format(ns=ns) + "?fieldSelector=" + urllib.parse.quote(sel))
        emit(f"fieldselector.cm.{sel.replace(ns, '$NS')}", code,
             names=sorted(i["metadata"]["name"] for i in b.get("items", []) if i["metadata"]["name"].startswith("fs-")))
    for path, sel in [(CMS, "data.x=1"), (CMS, "metadata.labels=x"), (KEX, "spec.field=x"),
                      (KEX, "metadata.name=x"), (PODS, "status.phase=Running"), (PODS, "spec.nodeName=n"),
                      (PODS, "spec.containers=x"), ("/api/v1/namespaces/{ns}/secrets", "type=Opaque"),
                      ("/api/v1/namespaces/{ns}/events", "involvedObject.name=x"),
                      ("/api/v1/namespaces/{ns}/events", "reason=x"), ("/api/v1/namespaces/{ns}/services", "spec.clusterIP=x"),
                      ("/apis/apps/v1/namespaces/{ns}/replicasets", "status.replicas=1"),
                      ("/api/v1/namespaces/{ns}/configmaps", "metadata.name=x,bad")]:
        code, _, b = c.request("GET", path.format(ns=ns) + "?fieldSelector=" + urllib.parse.quote(sel))
        emit(f"fieldselector.{path.split('/')[-1]}.{sel}", code,
             body=status_body(b) if code >= 400 else "ok")
    code, _, b = c.request("GET", "/api/v1/namespaces?fieldSelector=metadata.name%3Ddefault")
    emit("fieldselector.namespaces.name", code, names=[i["metadata"]["name"] for i in b.get("items", [])])
    code, _, b = c.request("GET", "/api/v1/namespaces?fieldSelector=status.phase%3DActive")
    emit("fieldselector.namespaces.status.phase", code, body=status_body(b) if code >= 400 else "ok")
    # a watch with an unsupported field selector
    code, ev, _ = c.stream(CMS.format(ns=ns) + "?watch=true&timeoutSeconds=1&fieldSelector=data.x%3D1", 3)
    emit("fieldselector.watch-unsupported", code, first=status_body(ev[0][1]) if ev else None)


# ---------------------------------------------------------------- watches


def probe_watch_bookmark(c, ns):
    _, _, l = c.request("GET", CMS.format(ns=ns))
    rv = l["metadata"]["resourceVersion"]
    code, events, closed = c.stream(
        CMS.format(ns=ns) + f"?watch=true&allowWatchBookmarks=true&resourceVersion={rv}&timeoutSeconds=6", 10)
    bm = [(t, e) for t, e in events if e.get("type") == "BOOKMARK"]
    emit("watch.bookmark.timeout6", code, types=[e.get("type") for _, e in events], closed_by_server=closed,
         first_bookmark_after_s=bm[0][0] if bm else None,
         bookmark=bm[0][1] if bm else None)
    # Does a bookmark come after changes (the progress of a busy collection)?
    code, events, closed = c.stream(
        CMS.format(ns=ns) + f"?watch=true&allowWatchBookmarks=true&resourceVersion={rv}&timeoutSeconds=65", 2)
    emit("watch.bookmark.long-timeout-first-2s", code, types=[e.get("type") for _, e in events])
    # Streaming list: initial events then the initial-events-end bookmark.
    c.request("POST", CMS.format(ns=ns), cm("w-init"))
    code, events, _ = c.stream(
        CMS.format(ns=ns) + "?watch=true&allowWatchBookmarks=true&sendInitialEvents=true"
        "&resourceVersionMatch=NotOlderThan&timeoutSeconds=2", 4)
    bm = [e for _, e in events if e.get("type") == "BOOKMARK"]
    emit("watch.sendInitialEvents", code, added=sum(1 for _, e in events if e.get("type") == "ADDED") > 0,
         bookmarks=[b.get("object") for b in bm][:1])
    code, events, _ = c.stream(CMS.format(ns=ns) + "?watch=true&sendInitialEvents=true&timeoutSeconds=2", 4)
    emit("watch.sendInitialEvents-without-rvm-and-bookmarks", code,
         first=status_body(events[0][1]) if events else None)
    code, events, _ = c.stream(CMS.format(ns=ns) + "?watch=true&sendInitialEvents=true"
                               "&resourceVersionMatch=NotOlderThan&timeoutSeconds=1", 3)
    emit("watch.sendInitialEvents-without-bookmarks", code,
         first=status_body(events[0][1]) if code >= 400 and events else [e.get("type") for _, e in events])
    code, events, _ = c.stream(CMS.format(ns=ns) + "?watch=true&sendInitialEvents=false&allowWatchBookmarks=true"
                               "&resourceVersionMatch=NotOlderThan&timeoutSeconds=1", 3)
    emit("watch.sendInitialEvents-false", code,
         first=status_body(events[0][1]) if code >= 400 and events else [e.get("type") for _, e in events])
    # A watch from rv=0: "any" state, starts with synthetic ADDED events.
    code, events, _ = c.stream(CMS.format(ns=ns) + "?watch=true&resourceVersion=0&timeoutSeconds=1", 3)
    emit("watch.rv0", code, types=sorted(set(e.get("type") for _, e in events)))
    # A DELETED event carries the last state with a new resourceVersion.
    _, _, o = c.request("POST", CMS.format(ns=ns), cm("w-del"))
    c.request("DELETE", CMS.format(ns=ns) + "/w-del")
    code, events, _ = c.stream(CMS.format(ns=ns) + f"?watch=true&resourceVersion={o['metadata']['resourceVersion']}"
                               "&timeoutSeconds=1&fieldSelector=metadata.name%3Dw-del", 3)
    dele = [e for _, e in events if e.get("type") == "DELETED"]
    emit("watch.deleted-event", code, types=[e.get("type") for _, e in events],
         rv_advanced=bool(dele) and int(dele[0]["object"]["metadata"]["resourceVersion"])
         > int(o["metadata"]["resourceVersion"]))


def probe_watch_410(c, ns):
    # The real server's watch caches start after resourceVersion 1 (410 at once for custom
    # resources); the emulator keeps a bounded history from its start: ask it to compact first.
    if c.request("GET", "/_emulator/counters")[0] == 200:
        c.request("POST", "/_emulator/expire-history", {})
    code, events, closed = c.stream(CMS.format(ns=ns) + "?watch=true&resourceVersion=1&timeoutSeconds=3", 5)
    emit("watch.too-old-rv", code, events=[{"type": e.get("type"),
                                            "object": status_body(e.get("object")) if isinstance(e, dict) else e}
                                           for _, e in events][:2], closed_by_server=closed)
    code, events, closed = c.stream(KEX.format(ns=ns) + "?watch=true&resourceVersion=1&timeoutSeconds=3", 5)
    emit("watch.too-old-rv.cr", code, events=[{"type": e.get("type"),
                                               "object": status_body(e.get("object")) if isinstance(e, dict) else e}
                                              for _, e in events][:2], closed_by_server=closed)
    code, events, closed = c.stream(CMS.format(ns=ns) + "?watch=true&resourceVersion=abc&timeoutSeconds=3", 5)
    emit("watch.rv-garbage", code, events=[status_body(e) if not isinstance(e, dict) or "type" not in e
                                           else {"type": e["type"], "object": status_body(e["object"])}
                                           for _, e in events][:1])
    _, _, l = c.request("GET", CMS.format(ns=ns))
    future = int(l["metadata"]["resourceVersion"]) + 100000
    t = time.monotonic()
    code, events, closed = c.stream(CMS.format(ns=ns) + f"?watch=true&resourceVersion={future}&timeoutSeconds=8", 10)
    emit("watch.rv-future", code, seconds=round(time.monotonic() - t),
         events=[{"type": e.get("type"), "object": status_body(e.get("object"))} if isinstance(e, dict) else e
                 for _, e in events][:1], closed_by_server=closed)


# ---------------------------------------------------------------- server-side apply


def probe_ssa(c, ns):
    path = CMS.format(ns=ns) + "/ssa"
    body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a": "1"}})
    code, _, b = c.request("PATCH", path + "?fieldManager=alice", body, APPLY)
    mf = lambda o: [(m.get("manager"), m.get("operation"), m.get("subresource")) for m in
                    (o or {}).get("metadata", {}).get("managedFields", [])]
    emit("ssa.create", code, managedFields=mf(b), fieldsV1=[m.get("fieldsV1") for m in b["metadata"]["managedFields"]])
    body2 = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a": "2"}})
    code, _, b = c.request("PATCH", path + "?fieldManager=bob", body2, APPLY)
    emit("ssa.conflict", code, body=status_body(b))
    code, _, b = c.request("PATCH", path + "?fieldManager=bob&force=true", body2, APPLY)
    emit("ssa.force", code, data=b.get("data"), managedFields=mf(b))
    code, _, b = c.request("PATCH", path, body2, APPLY)
    emit("ssa.no-fieldManager", code, body=status_body(b))
    # A field set by an Update (POST/PUT/PATCH) manager conflicts with a later applier.
    code, _, b = c.request("POST", CMS.format(ns=ns) + "?fieldManager=creator", cm("ssa-upd", {"a": "1"}))
    emit("managedFields.on-create", code, managedFields=mf(b))
    code, _, b = c.request("POST", CMS.format(ns=ns), cm("ssa-ua", {"a": "1"}))
    emit("managedFields.on-create-default-manager", code, managedFields=mf(b))
    code, _, b = c.request("PATCH", CMS.format(ns=ns) + "/ssa-upd?fieldManager=patcher", {"data": {"b": "2"}}, MERGE)
    emit("managedFields.after-merge-patch", code, managedFields=mf(b))
    body3 = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa-upd"}, "data": {"a": "9"}})
    code, _, b = c.request("PATCH", CMS.format(ns=ns) + "/ssa-upd?fieldManager=applier", body3, APPLY)
    emit("ssa.conflict-with-update-manager", code, body=status_body(b) if code >= 400 else {"data": b.get("data")})
    # Apply to a CR's status subresource.
    c.request("POST", KEX.format(ns=ns), kex("ssa-kex", {"x": 1}))
    body4 = json.dumps({"apiVersion": "kopf.dev/v1", "kind": "KopfExample", "metadata": {"name": "ssa-kex"},
                        "status": {"s": "ok"}})
    code, _, b = c.request("PATCH", KEX.format(ns=ns) + "/ssa-kex/status?fieldManager=st", body4, APPLY)
    emit("ssa.status-subresource.cr", code, status=b.get("status"), managedFields=mf(b))
    # Apply without apiVersion/kind.
    code, _, b = c.request("PATCH", path + "?fieldManager=alice", json.dumps({"data": {"a": "1"}}), APPLY)
    emit("ssa.missing-kind", code, body=status_body(b) if code >= 400 else b.get("data"))
    # Apply that omits a field it owned removes it.
    c.request("PATCH", path + "?fieldManager=carol",
              json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"c": "3"}}),
              APPLY)
    code, _, b = c.request("PATCH", path + "?fieldManager=carol",
                           json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}}), APPLY)
    emit("ssa.drop-owned-field", code, data=b.get("data"))


# ---------------------------------------------------------------- strategic merge


def probe_strategic_merge(c, ns):
    c.request("POST", CMS.format(ns=ns), cm("smp", {"a": "1"}, finalizers=["x.io/a"], labels={"l": "1"}))
    code, _, b = c.request("PATCH", CMS.format(ns=ns) + "/smp",
                           {"metadata": {"finalizers": ["x.io/b"]}, "data": {"b": "2"}}, SMP)
    emit("smp.configmap.finalizers-merge", code, finalizers=meta(b, "finalizers"), data=b.get("data"))
    code, _, b = c.request("PATCH", CMS.format(ns=ns) + "/smp",
                           {"metadata": {"$deleteFromPrimitiveList/finalizers": ["x.io/a"]}}, SMP)
    emit("smp.configmap.deleteFromPrimitiveList", code, finalizers=meta(b, "finalizers"))
    code, _, b = c.request("PATCH", CMS.format(ns=ns) + "/smp",
                           {"metadata": {"finalizers": ["x.io/c"]}}, MERGE)
    emit("merge.configmap.finalizers-replace", code, finalizers=meta(b, "finalizers"))
    code, _, b = c.request("PATCH", CMS.format(ns=ns) + "/smp", {"metadata": {"finalizers": None}}, MERGE)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "smp-pod"}, "spec": {"containers": [
        {"name": "a", "image": "busybox", "env": [{"name": "X", "value": "1"}]},
        {"name": "b", "image": "busybox"}]}}
    code, _, b = c.request("POST", PODS.format(ns=ns), pod)
    if code == 201:
        code, _, b = c.request("PATCH", PODS.format(ns=ns) + "/smp-pod",
                               {"metadata": {"labels": {"x": "y"}},
                                "spec": {"containers": [{"name": "b", "env": [{"name": "Y", "value": "2"}]}]}}, SMP)
        emit("smp.pod.containers-by-name", code,
             body=status_body(b) if code >= 400 else [(x["name"], x.get("image"), x.get("env"))
                                                      for x in b["spec"]["containers"]])
        code, _, b = c.request("PATCH", PODS.format(ns=ns) + "/smp-pod",
                               {"metadata": {"ownerReferences": [
                                   {"apiVersion": "v1", "kind": "ConfigMap", "name": "o1", "uid": "u1"}]}}, SMP)
        c.request("PATCH", PODS.format(ns=ns) + "/smp-pod",
                  {"metadata": {"ownerReferences": [
                      {"apiVersion": "v1", "kind": "ConfigMap", "name": "o2", "uid": "u2"}]}}, SMP)
        code, _, b = c.request("GET", PODS.format(ns=ns) + "/smp-pod")
        emit("smp.pod.ownerReferences-by-uid", code,
             owners=[o["name"] for o in b["metadata"].get("ownerReferences", [])])
        code, _, b = c.request("PATCH", PODS.format(ns=ns) + "/smp-pod",
                               {"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}, SMP)
        emit("smp.pod.patch-delete-container", code,
             body=status_body(b) if code >= 400 else [x["name"] for x in b["spec"]["containers"]])
        c.request("DELETE", PODS.format(ns=ns) + "/smp-pod?gracePeriodSeconds=0")
    else:
        emit("smp.pod.create", code, body=status_body(b))
    c.request("POST", KEX.format(ns=ns), kex("smp-kex", {"a": 1}))
    code, _, b = c.request("PATCH", KEX.format(ns=ns) + "/smp-kex", {"spec": {"b": 2}}, SMP)
    emit("smp.cr", code, body=status_body(b))
    code, _, b = c.request("PATCH", KEX.format(ns=ns) + "/smp-kex", {"spec": {"b": 2}}, "text/plain")
    emit("patch.unknown-content-type", code, body=status_body(b))


# ---------------------------------------------------------------- pruning and generation


def probe_pruning(c, ns):
    obj = {"apiVersion": "fid.kopf.dev/v1", "kind": "FidStrict", "metadata": {"name": "prune"}, "junk": 1,
           "spec": {"count": 3, "unknown": "x", "free": {"anything": {"deep": 1}},
                    "tags": [{"k": "a", "extra": 1}]},
           "status": {"phase": "P", "other": 1}}
    code, h, b = c.request("POST", FID.format(ns=ns), obj)
    emit("prune.strict-schema.create", code, spec=b.get("spec"), status=b.get("status"), junk=b.get("junk"),
         warning=h.get("Warning"))
    code, h, b = c.request("PATCH", FID.format(ns=ns) + "/prune/status",
                           {"status": {"phase": "Q", "other": 2}}, MERGE)
    emit("prune.strict-schema.status", code, status=b.get("status"), warning=h.get("Warning"))
    code, h, b = c.request("POST", FID.format(ns=ns) + "?fieldValidation=Strict",
                           {**obj, "metadata": {"name": "prune-strict"}})
    emit("prune.fieldValidation-Strict", code, body=status_body(b) if code >= 400 else b.get("spec"))
    code, h, b = c.request("POST", FID.format(ns=ns) + "?fieldValidation=Ignore",
                           {**obj, "metadata": {"name": "prune-ignore"}})
    emit("prune.fieldValidation-Ignore", code, warning=h.get("Warning"))
    code, h, b = c.request("POST", KEX.format(ns=ns),
                           {**kex("prune-kex", {"anything": {"deep": [1, 2]}}), "junk": 1, "status": {"s": 1}})
    emit("prune.preserve-unknown-fields.kopfexample", code, spec=b.get("spec"), status=b.get("status"),
         junk=b.get("junk"), warning=h.get("Warning"))
    code, h, b = c.request("POST", CMS.format(ns=ns), {**cm("prune-cm"), "junk": 1})
    emit("prune.builtin-unknown-field", code, junk=b.get("junk") if code < 400 else status_body(b),
         warning=h.get("Warning"))
    code, h, b = c.request("POST", CMS.format(ns=ns) + "?fieldValidation=Strict", {**cm("prune-cm2"), "junk": 1})
    emit("prune.builtin-unknown-field.Strict", code, body=status_body(b) if code >= 400 else "accepted")


def probe_generation(c, ns):
    path = KEX.format(ns=ns) + "/gen"
    _, _, b = c.request("POST", KEX.format(ns=ns), kex("gen", {"a": 1}))
    gens = [("create", b["metadata"].get("generation"))]
    _, _, b = c.request("PATCH", path, {"spec": {"a": 2}}, MERGE)
    gens.append(("spec", b["metadata"].get("generation")))
    _, _, b = c.request("PATCH", path, {"metadata": {"labels": {"x": "y"}, "annotations": {"a": "b"}}}, MERGE)
    gens.append(("labels+annotations", b["metadata"].get("generation")))
    _, _, b = c.request("PATCH", path, {"metadata": {"finalizers": ["x.io/f"]}}, MERGE)
    gens.append(("finalizers", b["metadata"].get("generation")))
    _, _, b = c.request("PATCH", path + "/status", {"status": {"s": 1}}, MERGE)
    gens.append(("status-subresource", b["metadata"].get("generation")))
    code, _, b = c.request("PATCH", path, {"status": {"s": 2}}, MERGE)
    gens.append(("status-via-main", b["metadata"].get("generation")))
    emit("generation.cr", 200, gens=gens, status_via_main_ignored=b.get("status") == {"s": 1})
    code, _, b = c.request("PATCH", path + "/status", {"spec": {"a": 99}, "metadata": {"labels": {"z": "1"}}}, MERGE)
    emit("status-subresource.ignores-spec-and-labels", code, spec=b.get("spec"),
         labels=b["metadata"].get("labels"))
    c.request("PATCH", path, {"metadata": {"finalizers": None}}, MERGE)
    _, _, b = c.request("POST", CMS.format(ns=ns), cm("gen-cm"))
    emit("generation.configmap", 200, generation=b["metadata"].get("generation"))
    _, _, b = c.request("POST", "/apis/apps/v1/namespaces/%s/deployments" % ns, {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "gen-dep"},
        "spec": {"selector": {"matchLabels": {"a": "b"}},
                 "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [
                     {"name": "c", "image": "busybox"}]}}}})
    g1 = b.get("metadata", {}).get("generation")
    _, _, b = c.request("PATCH", "/apis/apps/v1/namespaces/%s/deployments/gen-dep" % ns,
                        {"metadata": {"labels": {"x": "y"}}}, MERGE)
    g2 = b.get("metadata", {}).get("generation")
    _, _, b = c.request("PATCH", "/apis/apps/v1/namespaces/%s/deployments/gen-dep" % ns,
                        {"spec": {"replicas": 3}}, MERGE)
    emit("generation.deployment", 200, gens=[g1, g2, b.get("metadata", {}).get("generation")])


# ---------------------------------------------------------------- deletion and finalizers


def probe_deletion(c, ns):
    path = KEX.format(ns=ns) + "/del"
    c.request("POST", KEX.format(ns=ns), kex("del", {"a": 1}, finalizers=["x.io/f"]))
    code, _, b = c.request("DELETE", path)
    emit("delete.with-finalizers.cr", code, kind=b.get("kind"),
         meta=meta(b, "deletionTimestamp", "deletionGracePeriodSeconds", "finalizers", "generation"))
    code, _, b = c.request("GET", path)
    emit("delete.with-finalizers.still-there", code, finalizers=meta(b, "finalizers"))
    first_ts = b["metadata"].get("deletionTimestamp")
    time.sleep(1.1)
    code, _, b = c.request("DELETE", path)
    emit("delete.again", code, kind=b.get("kind"),
         same_timestamp=b.get("metadata", {}).get("deletionTimestamp") == first_ts,
         meta=meta(b, "deletionGracePeriodSeconds", "generation"))
    code, _, b = c.request("PATCH", path, {"metadata": {"finalizers": ["x.io/f", "x.io/g"]}}, MERGE)
    emit("delete.add-finalizer-while-deleting", code, body=status_body(b) if code >= 400 else meta(b, "finalizers"))
    code, _, b = c.request("PATCH", path, {"spec": {"a": 2}}, MERGE)
    emit("delete.update-spec-while-deleting", code,
         body=status_body(b) if code >= 400 else {"spec": b.get("spec"), **meta(b, "generation")})
    code, _, b = c.request("PATCH", path, {"metadata": {"deletionTimestamp": None}}, MERGE)
    emit("delete.unset-deletionTimestamp", code,
         body=status_body(b) if code >= 400 else meta(b, "deletionTimestamp"))
    code, _, b = c.request("PATCH", path, {"metadata": {"finalizers": None}}, MERGE)
    emit("delete.remove-finalizers", code, kind=b.get("kind"), meta=meta(b, "deletionTimestamp", "finalizers"))
    code, _, b = c.request("GET", path)
    emit("delete.gone-after-finalizers", code)
    # A ConfigMap with a finalizer.
    c.request("POST", CMS.format(ns=ns), cm("del-cm", finalizers=["x.io/f"]))
    code, _, b = c.request("DELETE", CMS.format(ns=ns) + "/del-cm")
    emit("delete.with-finalizers.configmap", code, kind=b.get("kind"),
         meta=meta(b, "deletionTimestamp", "deletionGracePeriodSeconds", "finalizers"))
    c.request("PATCH", CMS.format(ns=ns) + "/del-cm", {"metadata": {"finalizers": None}}, MERGE)
    c.request("POST", CMS.format(ns=ns), cm("del-plain"))
    code, _, b = c.request("DELETE", CMS.format(ns=ns) + "/del-plain")
    emit("delete.plain.configmap", code, kind=b.get("kind"),
         body=status_body(b) if b.get("kind") == "Status" else meta(b, "name"))
    c.request("POST", KEX.format(ns=ns), kex("del-plain"))
    code, _, b = c.request("DELETE", KEX.format(ns=ns) + "/del-plain")
    emit("delete.plain.cr", code, kind=b.get("kind"),
         body=status_body(b) if b.get("kind") == "Status" else meta(b, "name", "deletionTimestamp"))
    c.request("POST", CMS.format(ns=ns), cm("del-grace"))
    code, _, b = c.request("DELETE", CMS.format(ns=ns) + "/del-grace?gracePeriodSeconds=30")
    emit("delete.gracePeriod.configmap", code, kind=b.get("kind"))
    code, _, b = c.request("GET", CMS.format(ns=ns) + "/del-grace")
    emit("delete.gracePeriod.configmap.after", code)
    c.request("POST", CMS.format(ns=ns), cm("del-dry", finalizers=["x.io/f"]))
    code, _, b = c.request("DELETE", CMS.format(ns=ns) + "/del-dry?dryRun=All")
    emit("delete.dryRun", code, kind=b.get("kind"), meta=meta(b, "deletionTimestamp"))
    code, _, b = c.request("GET", CMS.format(ns=ns) + "/del-dry")
    emit("delete.dryRun.after", code, meta=meta(b, "deletionTimestamp"))
    c.request("PATCH", CMS.format(ns=ns) + "/del-dry", {"metadata": {"finalizers": None}}, MERGE)
    # deletecollection
    for i in range(2):
        c.request("POST", CMS.format(ns=ns), cm(f"dc{i}", labels={"dc": "1"}))
    code, _, b = c.request("DELETE", CMS.format(ns=ns) + "?labelSelector=dc%3D1")
    emit("deletecollection", code, kind=b.get("kind"), items=len(b.get("items", [])) if isinstance(b, dict) else b)


# ---------------------------------------------------------------- discovery


def probe_discovery(c, ns):
    code, _, b = c.request("GET", "/api")
    emit("discovery.api", code, kind=b.get("kind"), versions=b.get("versions"))
    code, _, b = c.request("GET", "/apis")
    groups = {g["name"]: g for g in b.get("groups", [])}
    emit("discovery.apis", code, kind=b.get("kind"), has_kopf=("kopf.dev" in groups),
         kopf=groups.get("kopf.dev"))
    code, _, b = c.request("GET", "/apis/kopf.dev/v1")
    emit("discovery.group-version", code, kind=b.get("kind"),
         resources=sorted(((r.get("name"), r.get("namespaced"), tuple(sorted(r.get("verbs", []))),
                            tuple(r.get("shortNames", [])), r.get("singularName"), r.get("kind"),
                            tuple(r.get("categories", [])), "storageVersionHash" in r)
                           for r in b.get("resources", []))))
    code, _, b = c.request("GET", "/api/v1")
    cmres = [r for r in b.get("resources", []) if r["name"] == "configmaps"]
    emit("discovery.core-v1.configmaps", code,
         entry={k: v for k, v in (cmres[0] if cmres else {}).items() if k != "storageVersionHash"})
    acc = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
    for path in ["/api", "/apis"]:
        code, h, b = c.request("GET", path, accept=acc)
        items = b.get("items", []) if isinstance(b, dict) else []
        kopf = [g for g in items if g.get("metadata", {}).get("name") == "kopf.dev"]
        emit(f"discovery.aggregated{path}", code, content_type=h.get("Content-Type"), kind=b.get("kind"),
             apiVersion=b.get("apiVersion"), kopf=kopf[0] if kopf else None,
             first_keys=sorted(items[0].keys()) if items else None)
    code, h, b = c.request("GET", "/apis", accept="application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList")
    emit("discovery.aggregated-v2beta1-only", code, content_type=h.get("Content-Type"))
    code, _, b = c.request("GET", "/version")
    emit("discovery.version", code, keys=sorted(b.keys()) if isinstance(b, dict) else b,
         gitVersion=b.get("gitVersion"))


if __name__ == "__main__":
    main()
