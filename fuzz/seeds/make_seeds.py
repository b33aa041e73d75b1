#!/usr/bin/env python3
"""Writes the seeds that are not captured from a running program: VRRP adverts built from
the keepalived 2.2.7 golden bytes (vrrp/src/packet/tests.rs) wrapped in the IP headers a
raw socket delivers, and gateway control frames and stream preambles as the gateways
write them (gateway/src/proto.rs). Run from fuzz/: seeds/make_seeds.py
"""
import ipaddress
import json
import struct


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ip4(a):
    return ipaddress.IPv4Address(a).packed


def ip6(a):
    return ipaddress.IPv6Address(a).packed


def vrrp(version, vrid, prio, interval, addrs, src, dst, auth=b"", pseudo=True):
    """A VRRP message with its checksum, as vrrp/src/packet.rs encodes it."""
    v6 = len(src) == 16
    if version == 2:
        head = bytes([0x21, vrid, prio, len(addrs), 1 if auth else 0, interval, 0, 0])
        body = head + b"".join(addrs) + auth.ljust(8, b"\0")
        ph = b""
    else:
        head = bytes([0x31, vrid, prio, len(addrs)]) + struct.pack("!H", interval) + b"\0\0"
        body = head + b"".join(addrs)
        if v6:
            ph = src + dst + struct.pack("!I", len(body)) + b"\0\0\0\x70"
        elif pseudo:
            ph = src + dst + b"\0\x70" + struct.pack("!H", len(body))
        else:
            ph = b""
    c = csum(ph + body)
    return body[:6] + struct.pack("!H", c) + body[8:]


def ipv4_packet(src, dst, ttl, payload, options=b""):
    """An IPv4 header as keepalived sends it (TOS 0xc0), then the payload."""
    ihl = (20 + len(options)) // 4
    h = bytes([0x40 | ihl, 0xC0]) + struct.pack("!H", 20 + len(options) + len(payload))
    h += bytes([0, 0, 0, 0, ttl, 112, 0, 0]) + src + dst + options
    h = h[:10] + struct.pack("!H", csum(h)) + h[12:]
    return h + payload


def ipv6_packet(src, dst, hops, payload):
    return bytes([0x60, 0, 0, 0]) + struct.pack("!HBB", len(payload), 112, hops) + src + dst + payload


def write(target, name, data):
    with open(f"corpus/{target}/{name}", "wb") as f:
        f.write(data)


m4, m6 = ip4("224.0.0.18"), ip6("ff02::12")
s4 = ip4("192.0.2.2")
# keepalived 2.2.7 golden adverts (reference bytes in vrrp/src/packet/tests.rs).
v2 = vrrp(2, 51, 100, 1, [ip4("192.0.2.100")], s4, m4)
assert v2.hex() == "21336401000 1b865c0000264".replace(" ", "") + "00" * 8
write("vrrp_ipv4", "keepalived-v2", ipv4_packet(s4, m4, 255, v2))
write("vrrp_ipv4", "keepalived-v2-shutdown",
      ipv4_packet(ip4("192.0.2.1"), m4, 255, vrrp(2, 51, 0, 1, [ip4("192.0.2.100")], ip4("192.0.2.1"), m4)))
write("vrrp_ipv4", "keepalived-v2-pass",
      ipv4_packet(s4, m4, 255, vrrp(2, 7, 200, 3, [ip4("192.0.2.10"), ip4("192.0.2.11")], s4, m4, auth=b"secret")))
v3 = vrrp(3, 52, 100, 10, [ip4("192.0.2.101")], s4, m4)
assert v3.hex() == "31346401000a05c9c0000265"
write("vrrp_ipv4", "keepalived-v3", ipv4_packet(s4, m4, 255, v3))
write("vrrp_ipv4", "rfc9568-v3", ipv4_packet(s4, m4, 255, vrrp(3, 52, 100, 10, [ip4("192.0.2.101")], s4, m4, pseudo=False)))
write("vrrp_ipv4", "unicast-v3-options",
      ipv4_packet(s4, ip4("192.0.2.3"), 64, vrrp(3, 9, 150, 100, [ip4("198.51.100.1"), ip4("198.51.100.2")], s4, ip4("192.0.2.3")),
                  options=b"\x94\x04\0\0"))
s6 = ip6("fe80::ff:fe00:2")
v36 = vrrp(3, 53, 100, 10, [ip6("fe80::53"), ip6("2001:db8::101")], s6, m6)
assert v36[:8].hex() == "313564 02000a4000".replace(" ", "")
write("vrrp_ipv6", "keepalived-v3", ipv6_packet(s6, m6, 255, v36))
write("vrrp_ipv6", "keepalived-v3-shutdown", ipv6_packet(s6, m6, 255, vrrp(3, 53, 0, 10, [ip6("fe80::53")], s6, m6)))

# Gateway control frames: u32 big-endian length, then JSON.
roster = [{"node_id": "cloud1", "sni": "cloud1.gw.example.com", "draining": False},
          {"node_id": "cloud2", "sni": "cloud2.gw.example.com", "draining": True}]
msgs = {
    "hello": {"type": "HELLO", "proto": 1, "gateway_id": "onprem1", "boot_epoch": 8815590716427763000,
              "slot": 3, "want_node": "cloud2", "exports": [{"service": "svc-a", "up": True}],
              "consumes": ["svc-b"]},
    "hello-ack": {"type": "HELLO_ACK", "node_id": "cloud1", "boot_epoch": 42, "roster": roster,
                  "accepted": ["svc-a"], "rejected": [{"service": "svc-x", "reason": "unauthorized"}],
                  "ping_ms": 5000, "dead_ms": 15000},
    "reject": {"type": "REJECT", "code": "draining", "message": "node drains", "retry_after_ms": 1000,
               "roster": roster},
    "service-state": {"type": "SERVICE_STATE", "service": "svc-a", "up": False, "reason": "connect refused"},
    "drain": {"type": "DRAIN", "deadline_ms": 30000, "reason": "shutdown"},
    "ping": {"type": "PING", "seq": 7},
    "pong": {"type": "PONG", "seq": 7},
    "error": {"type": "ERROR", "code": "unknown_service", "message": "svc-z"},
}
frames = {}
for name, m in msgs.items():
    body = json.dumps(m, separators=(",", ":")).encode()
    frames[name] = struct.pack("!I", len(body)) + body
    write("gateway_control", name, frames[name])
write("gateway_control", "session", frames["hello"] + frames["ping"] + frames["pong"] + frames["drain"])

# Stream preambles: kind, service (u8 length + name), family 0/4/6 + address + port, trace id.
trace = bytes(range(16))
write("gateway_preamble", "reverse-v4", b"\x01\x05svc-a\x04" + ip4("198.51.100.7") + struct.pack("!H", 40000) + trace)
write("gateway_preamble", "forward-v6", b"\x02\x05svc-b\x06" + ip6("2001:db8::7") + struct.pack("!H", 443) + trace)
write("gateway_preamble", "probe", b"\x03\x05svc-a\x00" + trace)
