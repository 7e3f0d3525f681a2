"""Writes BODIES line protocol bodies of LINES lines each into DIR: 100 sensors, a
reading every 5 s per sensor, nanosecond timestamps ending at now, every (sensor, time)
unique across all bodies, tags as Telegraf adds them."""
import os
import sys
import time

out, bodies, lines = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(out, exist_ok=True)
sensors = 100
total = bodies * lines
start_ms = int(time.time() * 1000) - (total // sensors + 1) * 5_000 - 60_000
n = 0
for b in range(bodies):
    rows = []
    for _ in range(lines):
        ts_ms = start_ms + (n // sensors) * 5_000
        value = -20.0 + (n % 17) * 0.13
        rows.append(f"temperature,sensor=CF-{n % sensors},host=gw-1,site=plant-1 value={value:.2f} {ts_ms * 1_000_000}\n")
        n += 1
    with open(os.path.join(out, f"{b}.lp"), "w") as f:
        f.write("".join(rows))
