#!/usr/bin/env python3
"""A libnetwork remote network driver written the way the seed article's plugin is
("Docker Networking With Plugin"): `-o bridge=BR` names an existing bridge (CreateNetwork
refuses when it is missing); each endpoint gets a veth pair whose host end goes on that
bridge and whose other end is handed to the daemon in Join. Python 3 standard library
only; it shells out to `ip`, as such plugins do (ferryd itself never does).

Usage: seed_driver.py (--tcp HOST:PORT | --unix PATH) --log FILE [--state FILE]
                      [--fail METHOD]... [--hang METHOD]... [--crash METHOD]...
                      [--garbage METHOD]...
                      [--join-gateway IP] [--disable-gateway-service] [--onlink-route CIDR]... [--via-route CIDR=IP]...
Every call is appended to FILE as one JSON line {"call": METHOD, "body": BODY}; a line
{"ready": true} is written once the server listens.
"""

import argparse
import http.server
import json
import os
import socketserver
import subprocess
import sys
import threading
import time

ARGS = None
NETWORKS = {}  # NetworkID -> bridge name, kept in a file: the daemon replays nothing


def save():
    with open(ARGS.state or ARGS.log + ".state", "w") as f:
        json.dump(NETWORKS, f)


def load():
    try:
        with open(ARGS.state or ARGS.log + ".state") as f:
            NETWORKS.update(json.load(f))
    except FileNotFoundError:
        pass
LOCK = threading.Lock()


def log(entry):
    with LOCK, open(ARGS.log, "a") as f:
        f.write(json.dumps(entry) + "\n")


def ip(*args):
    return subprocess.run(["ip", *args], capture_output=True, text=True)


def names(endpoint_id):
    return "veth-" + endpoint_id[:7], "vc-" + endpoint_id[:7]


def handle(method, body):
    if method == "Plugin.Activate":
        return {"Implements": ["NetworkDriver"]}
    if method == "NetworkDriver.GetCapabilities":
        return {"Scope": "local", "ConnectivityScope": "local"}
    if method == "NetworkDriver.CreateNetwork":
        generic = body.get("Options", {}).get("com.docker.network.generic", {}) or {}
        bridge = generic.get("bridge", "")
        if not bridge:
            return {"Err": "option bridge=NAME is required"}
        # Asked over netlink: /sys shows the namespace sysfs was mounted in, not ours.
        if ip("link", "show", bridge, "type", "bridge").stdout.strip() == "":
            return {"Err": "bridge %s does not exist" % bridge}
        NETWORKS[body["NetworkID"]] = bridge
        save()
        return {}
    if method == "NetworkDriver.DeleteNetwork":
        NETWORKS.pop(body.get("NetworkID"), None)
        save()
        return {}
    if method == "NetworkDriver.CreateEndpoint":
        if ARGS.mac:
            return {"Interface": {"MacAddress": ARGS.mac}}
        return {"Interface": None}
    if method == "NetworkDriver.Join":
        bridge = NETWORKS.get(body["NetworkID"])
        if bridge is None:
            return {"Err": "no such network %s" % body["NetworkID"]}
        host, peer = names(body["EndpointID"])
        for args in (
            ("link", "add", host, "type", "veth", "peer", "name", peer),
            ("link", "set", host, "master", bridge),
            ("link", "set", host, "up"),
        ):
            r = ip(*args)
            if r.returncode != 0:
                ip("link", "del", host)
                return {"Err": "ip %s: %s" % (" ".join(args), r.stderr.strip())}
        answer = {"InterfaceName": {"SrcName": peer, "DstPrefix": "eth"}}
        if ARGS.join_gateway:
            answer["Gateway"] = ARGS.join_gateway
        if ARGS.disable_gateway_service:
            answer["DisableGatewayService"] = True
        routes = [{"Destination": d, "RouteType": 1} for d in ARGS.onlink_route]
        routes += [{"Destination": d, "RouteType": 0, "NextHop": n}
                   for d, n in (r.split("=") for r in ARGS.via_route)]
        if routes:
            answer["StaticRoutes"] = routes
        return answer
    if method == "NetworkDriver.DeleteEndpoint":
        host, _ = names(body["EndpointID"])
        ip("link", "del", host)
        return {}
    if method == "NetworkDriver.EndpointOperInfo":
        return {"Value": {}}
    return {}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        body = json.loads(raw) if raw.strip() else None
        method = self.path.lstrip("/")
        log({"call": method, "body": body})
        if method in ARGS.crash:
            os._exit(3)
        if method in ARGS.hang:
            time.sleep(60)
        if method in ARGS.fail:
            answer = {"Err": "injected failure in %s" % method}
        else:
            answer = handle(method, body or {})
        data = json.dumps(answer).encode() + b"\n"
        if method in ARGS.garbage:
            data = b"<html>not a plugin answer</html>\n"
        # One write: headers and body together (see docker-protocols.md A2 on Nagle).
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.plugins.v1+json\r\n"
            "Content-Length: %d\r\nConnection: close\r\n\r\n" % len(data)
        )
        self.wfile.write(head.encode() + data)
        self.close_connection = True


class TCPServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def get_request(self):
        conn, _ = super().get_request()
        return conn, ("unix", 0)


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--tcp")
    p.add_argument("--unix")
    p.add_argument("--log", required=True)
    p.add_argument("--fail", action="append", default=[])
    p.add_argument("--hang", action="append", default=[])
    p.add_argument("--crash", action="append", default=[])
    p.add_argument("--garbage", action="append", default=[])
    p.add_argument("--join-gateway", help="Gateway to answer in Join")
    p.add_argument("--disable-gateway-service", action="store_true",
                   help="answer Join with DisableGatewayService")
    p.add_argument("--mac", help="MacAddress to answer in CreateEndpoint")
    p.add_argument("--onlink-route", action="append", default=[], help="CIDR, RouteType 1")
    p.add_argument("--via-route", action="append", default=[], help="CIDR=NEXTHOP, RouteType 0")
    p.add_argument("--state", help="where networks are kept (default: LOG.state)")
    ARGS = p.parse_args()
    load()
    if ARGS.tcp:
        host, port = ARGS.tcp.rsplit(":", 1)
        server = TCPServer((host, int(port)), Handler)
    else:
        if os.path.exists(ARGS.unix):
            os.unlink(ARGS.unix)
        server = UnixServer(ARGS.unix, Handler)
    log({"ready": True})
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
