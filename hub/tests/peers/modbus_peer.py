"""An independent Modbus device for interop tests: pymodbus 3.16 serving a register image built here
from the manufacturers' published maps, not from socer's profiles.

Images:
  sdm630     Eastron SDM630 input registers, IEEE 754 float32, big-endian words (Eastron SDM630
             Modbus protocol, input register table: 30001.. → protocol address 0..).
  sunspec103 A SunSpec inverter at base 40000: marker "SunS", common model 1 (L=66), three-phase
             inverter model 103 (L=50, integer + scale factors), end model 0xFFFF (SunSpec
             Information Model Specification; model 1 and 103 point layout).

Usage: modbus_peer.py IMAGE (--tcp PORT | --serial DEV) --unit N [--silent-others]
Prints "READY" on stdout once it serves. Exits when its stdin closes (the test ended).
"""

import argparse
import asyncio
import os
import struct
import sys
import threading

from pymodbus import FramerType
from pymodbus.server import StartAsyncSerialServer, StartAsyncTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

# The values the Rust test asserts; keep the two in step.
SDM630 = {
    0: 230.5,  # 30001 phase 1 line to neutral volts
    2: 231.25,  # 30003 phase 2
    4: 229.75,  # 30005 phase 3
    6: 5.5,  # 30007 phase 1 current, A
    8: 6.25,  # 30009 phase 2
    10: 4.75,  # 30011 phase 3
    52: 3456.5,  # 30053 total system power, W
    62: 0.9375,  # 30063 total system power factor
    70: 49.875,  # 30071 frequency, Hz
    72: 12345.5,  # 30073 total import kWh
    74: 678.25,  # 30075 total export kWh
}


def float_words(x):
    hi, lo = struct.unpack(">HH", struct.pack(">f", x))
    return [hi, lo]


def sdm630_input():
    regs = [0] * 80
    for addr, value in SDM630.items():
        regs[addr : addr + 2] = float_words(value)
    return regs


def sunspec_string(text, size):
    raw = text.encode("ascii")[: size * 2].ljust(size * 2, b"\0")
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


def sunspec103_holding():
    """Registers from 40000: marker, model 1, model 103, end."""
    regs = [0x5375, 0x6E53]  # "SunS"
    common = [0] * 66
    common[0:16] = sunspec_string("Fronius", 16)  # Mn, offset 2 (after ID, L)
    common[16:32] = sunspec_string("Symo 8.2-3-M", 16)  # Md, offset 18
    common[40:48] = sunspec_string("3.14.1", 8)  # Vr, offset 42
    common[48:64] = sunspec_string("28123456", 16)  # SN, offset 50
    common[64] = 1  # DA
    regs += [1, 66] + common
    m = [0] * 50  # model 103 body; index = point offset - 2

    def put(offset, *words):
        for i, w in enumerate(words):
            m[offset - 2 + i] = w & 0xFFFF

    put(2, 2226)  # A  (A_SF -2 → 22.26 A)
    put(3, 742, 751, 733)  # AphA, AphB, AphC → 7.42, 7.51, 7.33 A
    put(6, -2)  # A_SF
    put(7, 0xFFFF, 0xFFFF, 0xFFFF)  # PPVphAB.. not implemented
    put(10, 2301, 2298, 2314)  # PhVphA..C → 230.1, 229.8, 231.4 V
    put(13, -1)  # V_SF
    put(14, 512)  # W → 5120 W produced with W_SF 1
    put(15, 1)  # W_SF
    put(16, 5001)  # Hz → 50.01
    put(17, -2)  # Hz_SF
    put(22, 985)  # PF → 98.5 %
    put(23, -1)  # PF_SF
    put(24, 1234567 >> 16, 1234567 & 0xFFFF)  # WH acc32 → 12 345 670 Wh with WH_SF 1
    put(26, 1)  # WH_SF
    regs += [103, 50] + m
    regs += [0xFFFF, 0]
    return regs


def device(image, unit):
    # pymodbus wants every block non-empty: unused ones hold one register at address 0.
    def block(address=0, values=(0,)):
        return [SimData(address, values=list(values), datatype=DataType.REGISTERS)]

    if image == "sdm630":
        # Holding 0xFC02 (464515) is the meter code the SDM630 answers with: 0x0070.
        ir, hr = block(0, sdm630_input()), block(0xFC02, [0x0070])
    elif image == "sunspec103":
        ir, hr = block(), block(40000, sunspec103_holding())
    else:
        raise SystemExit(f"unknown image {image}")
    bits = [SimData(0, values=[False], datatype=DataType.BITS)]
    return SimDevice(id=unit, simdata=(bits, list(bits), hr, ir))


def drop_answers_not_from(unit):
    """An RTU frame starts with the unit id: send nothing in place of another id's answer."""

    def trace(sending, packet):
        return b"" if sending and packet[:1] != bytes([unit]) else packet

    return trace


def exit_when_stdin_closes():
    sys.stdin.read()
    os._exit(0)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("image")
    ap.add_argument("--tcp", type=int)
    ap.add_argument("--serial")
    ap.add_argument("--unit", type=int, default=1)
    ap.add_argument("--baud", type=int, default=9600)
    # A real RS-485 device stays silent for other unit ids; pymodbus 3.16 answers them with
    # exception 4 whatever ignore_missing_devices says, so the RTU peer drops those answers.
    ap.add_argument("--silent-others", action="store_true")
    a = ap.parse_args()
    threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
    dev = device(a.image, a.unit)
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
                trace_packet=drop_answers_not_from(a.unit) if a.silent_others else None,
            )
        )
        await asyncio.sleep(0.3)
    print("READY", flush=True)
    await task


if __name__ == "__main__":
    asyncio.run(main())
