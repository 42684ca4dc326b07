"""Serve, or independently read, a register image typed from a manufacturer's document.

The images live in drivers/tests/images/*.toml: each [[register]] holds the raw words a device puts
on the wire at one address (typed from the document's register table), and, for a mapped value,
the document's type, word order and unit factor. This script never reads socer's profiles.

  image_peer.py serve IMAGE --tcp PORT [--unit N]   pymodbus 3.16 server; prints READY
  image_peer.py serve IMAGE --serial DEV [--unit N] the same over RTU on a serial port / pty
  image_peer.py read IMAGE --tcp PORT [--unit N]    pymodbus client: reads every mapped register,
                                                    decodes it from the image's own definition and
                                                    prints the canonical values as JSON
The server exits when its stdin closes (the test ended).
"""

import argparse
import asyncio
import json
import os
import struct
import sys
import threading
import tomllib

from pymodbus import FramerType
from pymodbus.client import ModbusTcpClient
from pymodbus.server import StartAsyncSerialServer, StartAsyncTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

# Holes shorter than this between typed registers are served as zeros (a device answers a read
# across its unused registers); longer ones split the image into separate blocks.
GAP = 130


def load(path):
    with open(path, "rb") as f:
        return tomllib.load(f)


def blocks(image, function):
    regs = {}
    for r in image["register"]:
        if r["function"] != function:
            continue
        for i, w in enumerate(r["words"]):
            regs[r["address"] + i] = w
    out = []
    for a in sorted(regs):
        if out and a - (out[-1][0] + len(out[-1][1])) < GAP:
            start, words = out[-1]
            words.extend([0] * (a - start - len(words)))
            words.append(regs[a])
        else:
            out.append((a, [regs[a]]))
    if not out:
        out = [(0, [0])]
    return [SimData(a, values=w, datatype=DataType.REGISTERS) for a, w in out]


def decode(words, typ, order):
    if order == "low_first":
        words = list(reversed(words))
    raw = b"".join(w.to_bytes(2, "big") for w in words)
    fmt = {"u16": ">H", "i16": ">h", "u32": ">I", "i32": ">i", "u64": ">Q", "i64": ">q", "f32": ">f", "f64": ">d"}[typ]
    return struct.unpack(fmt, raw)[0]


def independent_read(image, port, unit):
    client = ModbusTcpClient("127.0.0.1", port=port, timeout=3)
    if not client.connect():
        raise SystemExit("cannot connect")
    values = {}
    for r in image["register"]:
        if "quantity" not in r:
            continue
        n = len(r["words"])
        if r["function"] == "holding":
            rr = client.read_holding_registers(r["address"], count=n, device_id=unit)
        else:
            rr = client.read_input_registers(r["address"], count=n, device_id=unit)
        if rr.isError():
            raise SystemExit(f"read {r['address']} failed: {rr}")
        v = decode(rr.registers, r["type"], r["word_order"]) * r["factor"] * r.get("sign", 1)
        q = r["quantity"]
        if q in ("v_v", "i_a"):
            arr = values.setdefault(q, [None, None, None])
            arr[r["phase"] - 1] = (arr[r["phase"] - 1] or 0.0) + v
        else:
            values[q] = values.get(q, 0.0) + v
    client.close()
    print(json.dumps(values))


def drop_answers_not_from(unit):
    """An RS-485 device stays silent for other unit ids; pymodbus answers them with exception 4."""

    def trace(sending, packet):
        return b"" if sending and packet[:1] != bytes([unit]) else packet

    return trace


def exit_when_stdin_closes():
    sys.stdin.read()
    os._exit(0)


async def serve(image, a):
    threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
    bits = [SimData(0, values=[False], datatype=DataType.BITS)]
    dev = SimDevice(id=a.unit, simdata=(bits, list(bits), blocks(image, "holding"), blocks(image, "input")))
    if a.tcp is not None:
        task = asyncio.create_task(StartAsyncTcpServer(dev, address=("127.0.0.1", a.tcp)))
        for _ in range(100):
            try:
                _, w = await asyncio.open_connection("127.0.0.1", a.tcp)
                w.close()
                break
            except OSError:
                await asyncio.sleep(0.05)
    else:
        task = asyncio.create_task(
            StartAsyncSerialServer(
                dev,
                framer=FramerType.RTU,
                port=a.serial,
                baudrate=a.baud,
                trace_packet=drop_answers_not_from(a.unit),
            )
        )
        await asyncio.sleep(0.3)
    print("READY", flush=True)
    await task


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["serve", "read"])
    ap.add_argument("image")
    ap.add_argument("--tcp", type=int)
    ap.add_argument("--serial")
    ap.add_argument("--baud", type=int, default=9600)
    ap.add_argument("--unit", type=int)
    a = ap.parse_args()
    image = load(a.image)
    if a.unit is None:
        a.unit = image["unit"]
    if a.mode == "read":
        independent_read(image, a.tcp, a.unit)
    else:
        asyncio.run(serve(image, a))


if __name__ == "__main__":
    main()
