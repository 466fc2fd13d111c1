#!/usr/bin/env python3
"""An experiment beside bench/bpf/ctfast.c (docs/PERFORMANCE.md, "a conntrack fast path"):
marks every ESTABLISHED conntrack entry to destination port PORT liberal in both
directions (IP_CT_TCP_FLAG_BE_LIBERAL, through ctnetlink: an IPCTNL_MSG_CT_NEW update
with CTA_PROTOINFO_TCP_FLAGS_ORIGINAL/REPLY), in the network namespace it runs in, as an
nftables flowtable marks the flows it offloads. A flow so marked survives the fast path
letting it go mid-stream with the namespace's nf_conntrack_tcp_be_liberal left at 0.

Usage (as root, in the host's namespace): bench/bpf/ctliberal.py PORT"""
import ipaddress
import os
import re
import socket
import struct
import sys

NETLINK_NETFILTER = 12
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NESTED = 0x8000
LIBERAL = 0x08

def attr(t, payload):
    n = 4 + len(payload)
    return struct.pack("=HH", n, t) + payload + b"\0" * ((4 - n % 4) % 4)

def nest(t, *parts):
    return attr(t | NESTED, b"".join(parts))

def update(sock, seq, src, dst, sport, dport):
    tuple_orig = nest(1,
        nest(1, attr(1, ipaddress.ip_address(src).packed), attr(2, ipaddress.ip_address(dst).packed)),
        nest(2, attr(1, bytes([6])), attr(2, struct.pack("!H", sport)), attr(3, struct.pack("!H", dport))))
    flags = struct.pack("BB", LIBERAL, LIBERAL)
    protoinfo = nest(4, nest(1, attr(4, flags), attr(5, flags)))
    body = struct.pack("BBH", socket.AF_INET, 0, 0) + tuple_orig + protoinfo
    msg_type = (1 << 8) | 0  # NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_NEW
    hdr = struct.pack("=IHHII", 16 + len(body), msg_type, NLM_F_REQUEST | NLM_F_ACK, seq, 0)
    sock.send(hdr + body)
    reply = sock.recv(65536)
    _, rtype, _, _, _ = struct.unpack("=IHHII", reply[:16])
    err = struct.unpack("=i", reply[16:20])[0] if rtype == 2 else None
    return err

port = sys.argv[1]
sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
sock.bind((0, 0))
n = 0
for line in open("/proc/net/nf_conntrack"):
    if " tcp " not in line or "ESTABLISHED" not in line or f"dport={port} " not in line:
        continue
    m = re.search(r"src=(\S+) dst=(\S+) sport=(\d+) dport=(\d+)", line)
    err = update(sock, n + 1, m[1], m[2], int(m[3]), int(m[4]))
    print(f"{m[1]}:{m[3]} -> {m[2]}:{m[4]}: {'ok' if err == 0 else os.strerror(-err)}")
    n += 1
print(n, "entries")
