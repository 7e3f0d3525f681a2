#!/usr/bin/env bash
# Line protocol ingest, Vigía against InfluxDB 1.6 given the same bodies by the same
# independent client (curl) in the same run. Figures only; nothing here fails on a rate.
#
#   benches/vs-influxdb/run.sh [BODIES] [LINES] [CONNECTIONS]   (default 200 5000 16)
#
# Needs Debian's `curl` and `influxdb` (apt-get install curl influxdb) and a release build
# of vigia (built here). Both servers get a fresh data dir on this machine's disk, their
# durable defaults (InfluxDB fsyncs its WAL before its 204: wal-fsync-delay 0s; Vigía
# commits to its durable bus before its 204) and the same client concurrency.
# InfluxDB's 204 means stored and queryable; Vigía's means durable, so Vigía's clock also
# runs until its workers have stored every reading (bus drained): end to end.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bodies=${1:-200} lines=${2:-5000} connections=${3:-16}
for tool in influxd curl xargs python3; do
  command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install curl influxdb)" >&2; exit 2; }
done
target="${CARGO_TARGET_DIR:-$root/target}"
(cd "$root" && cargo build --release -p vigia --quiet)
vigia="$target/release/vigia"

work="$(mktemp -d /var/tmp/vs-influxdb.XXXXXX)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 1 100); do curl -fs "$1" >/dev/null 2>&1 && return; sleep 0.1; done; echo "$1 did not answer" >&2; exit 1; }
now() { date +%s.%N; }

echo "generating $bodies bodies x $lines lines..."
python3 "$here/gen.py" "$work/bodies" "$bodies" "$lines"
total=$((bodies * lines))
bytes=$(cat "$work/bodies"/*.lp | wc -c)

# The independent client: curl, CONNECTIONS requests in flight at a time (xargs -P), each body
# posted once. (wrk was tried first: a write lost on a reconnect is never re-sent, so a run
# could wait for its 600 s duration; curl answers for every body.) Prints "answered not-2xx".
post_all() { # url path auth
  seq 0 $((bodies - 1)) | xargs -P "$connections" -I{} curl -s -o /dev/null -w '%{http_code}\n' \
    -X POST -H "Authorization: $3" -H 'Content-Type: text/plain' \
    --data-binary "@$work/bodies/{}.lp" "$1$2" > "$work/codes"
  echo "client: $(wc -l < "$work/codes") writes answered, $(grep -vc '^20' "$work/codes" || true) not 2xx"
}

# --- InfluxDB 1.6
iport=$(free_port)
cat > "$work/influxdb.conf" <<CONF
reporting-disabled = true
[meta]
  dir = "$work/influx/meta"
[data]
  dir = "$work/influx/data"
  wal-dir = "$work/influx/wal"
  wal-fsync-delay = "0s"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:$iport"
  log-enabled = false
[monitor]
  store-enabled = false
CONF
influxd run -config "$work/influxdb.conf" > "$work/influxd.log" 2>&1 &
pids+=($!); ipid=$!
wait_http "http://127.0.0.1:$iport/ping"
curl -fs -XPOST "http://127.0.0.1:$iport/query" --data-urlencode "q=CREATE DATABASE bench" >/dev/null
t0=$(now)
post_all "http://127.0.0.1:$iport" "/write?db=bench&precision=ns" "Token none"
t1=$(now)
icpu=$(awk '{print ($14+$15)/100}' /proc/$ipid/stat)
irss=$(awk '/VmHWM/{print $2/1024}' /proc/$ipid/status)
stored=$(curl -fs "http://127.0.0.1:$iport/query?db=bench" --data-urlencode 'q=SELECT count(value) FROM temperature' | python3 -c 'import json,sys; print(json.load(sys.stdin)["results"][0]["series"][0]["values"][0][1])')
kill "$ipid"; wait "$ipid" 2>/dev/null || true
influx_rate=$(python3 -c "print(round($total/($t1-$t0)))")
echo "InfluxDB 1.6: $total readings ($bytes bytes) in $(python3 -c "print(round($t1-$t0,2))") s = $influx_rate readings/s; stored $stored; CPU ${icpu}s; peak RSS ${irss} MB"

# --- Vigía, embedded defaults
vport=$(free_port)
token=bench-token-0123456789abcdef
VIGIA_BOOTSTRAP_TOKEN=$token VIGIA_LOG=warn "$vigia" serve --listen "127.0.0.1:$vport" --data-dir "$work/vigia" > "$work/vigia.log" 2>&1 &
pids+=($!); vpid=$!
wait_http "http://127.0.0.1:$vport/readyz"
metric() { curl -fs "http://127.0.0.1:$vport/metrics" | awk -v m="$1" '$1 == m || index($1, m"{") == 1 {s += $2} END {print s + 0}'; }
t0=$(now)
post_all "http://127.0.0.1:$vport" "/api/v2/write?precision=ns" "Token $token"
t_accepted=$(now)
until [ "$(metric vigia_bus_depth_readings)" = "0" ]; do sleep 0.02; done
t1=$(now)
vcpu=$(awk '{print ($14+$15)/100}' /proc/$vpid/stat)
vrss=$(awk '/VmHWM/{print $2/1024}' /proc/$vpid/status)
stored=$(metric vigia_store_readings_written_total)
vigia_rate=$(python3 -c "print(round($total/($t1-$t0)))")
echo "Vigía: $total readings; durable (204s) after $(python3 -c "print(round($t_accepted-$t0,2))") s, stored after $(python3 -c "print(round($t1-$t0,2))") s = $vigia_rate readings/s end to end; stored (metric) $stored; CPU ${vcpu}s; peak RSS ${vrss} MB"
echo "ratio Vigía / InfluxDB 1.6 (end to end): $(python3 -c "print(round($vigia_rate/$influx_rate,2))")x"
