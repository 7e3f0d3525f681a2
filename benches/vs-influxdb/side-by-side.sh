#!/usr/bin/env bash
# Vigía (JSON, POST /api/v1/readings) against InfluxDB 1.6 (line protocol, POST /write),
# the same readings sent by the same independent client (wrk + writes.lua) in one run:
# batched (PER_BATCH readings a request) and single readings, at 16 and 64 connections,
# plus the `GET /healthz` floor of Vigía at 64. Figures only; nothing fails on a rate.
#
#   benches/vs-influxdb/side-by-side.sh [SECONDS] [PER_BATCH]     (default 15 1000)
#
# Needs Debian's wrk, curl and influxdb (apt-get install wrk curl influxdb); builds vigia
# in release. Each scenario gets a fresh server and data dir, so peak RSS (VmHWM) is that
# scenario's. Both servers keep their durable defaults: InfluxDB fsyncs its WAL before its
# 204 (wal-fsync-delay 0s); Vigía commits to its durable bus before its 202.
# End to end is counted, not trusted: the clock runs from the first request to the last
# reading stored — InfluxDB's count query, Vigía's bus drained and
# vigia_store_readings_written_total — and the rate is stored readings over that time.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
seconds=${1:-15} per_batch=${2:-1000}
for tool in influxd wrk curl python3; do
  command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install wrk curl influxdb)" >&2; exit 2; }
done
target="${CARGO_TARGET_DIR:-$root/target}"
(cd "$root" && cargo build --release -p vigia --quiet)
vigia="$target/release/vigia"

work="$(mktemp -d /var/tmp/side-by-side.XXXXXX)"
server_pid=""
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 1 200); do curl -fs "$1" >/dev/null 2>&1 && return; sleep 0.05; done; echo "$1 did not answer" >&2; exit 1; }
now() { date +%s.%N; }
calc() { python3 -c "print($1)"; }
token=bench-token-0123456789abcdef
base_ms=$(( $(date +%s) * 1000 - 86400000 ))
threads=2

start_influx() {
  port=$(free_port); dir="$work/influx-$1"
  mkdir -p "$dir"
  cat > "$dir/influxdb.conf" <<CONF
reporting-disabled = true
[meta]
  dir = "$dir/meta"
[data]
  dir = "$dir/data"
  wal-dir = "$dir/wal"
  wal-fsync-delay = "0s"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:$port"
  log-enabled = false
  max-body-size = 0
[monitor]
  store-enabled = false
CONF
  influxd run -config "$dir/influxdb.conf" > "$dir/log" 2>&1 &
  server_pid=$!
  wait_http "http://127.0.0.1:$port/ping"
  curl -fs -XPOST "http://127.0.0.1:$port/query" --data-urlencode "q=CREATE DATABASE bench" >/dev/null
  url="http://127.0.0.1:$port"
}

start_vigia() {
  port=$(free_port); dir="$work/vigia-$1"
  VIGIA_BOOTSTRAP_TOKEN=$token VIGIA_LOG=warn "$vigia" serve --listen "127.0.0.1:$port" \
    --data-dir "$dir" > "$work/vigia-$1.log" 2>&1 &
  server_pid=$!
  wait_http "http://127.0.0.1:$port/readyz"
  url="http://127.0.0.1:$port"
}

stop_server() { kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""; }
peak_rss_mb() { awk '/VmHWM/{printf "%.0f", $2/1024}' "/proc/$server_pid/status"; }
vigia_metric() { curl -fs "$url/metrics" | awk -v m="$1" '$1 == m || index($1, m"{") == 1 {s += $2} END {printf "%d", s + 0}'; }
influx_count() {
  curl -fs "$url/query?db=bench" --data-urlencode 'q=SELECT count(value) FROM temperature' |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["results"][0]; print(r["series"][0]["values"][0][1] if "series" in r else 0)'
}

# run_wrk FORMAT PER_REQUEST CONNECTIONS PATH AUTH → sets result (wrk's RESULT line)
run_wrk() {
  result=$(FORMAT=$1 PER_REQUEST=$2 BASE_MS=$base_ms THREADS=$threads \
    wrk -t "$threads" -c "$3" -d "${seconds}s" --timeout 10s -s "$here/writes.lua" \
      -H "Authorization: $5" "$url$4" | grep '^RESULT')
}
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $result"; }

rows=()
# scenario NAME PER_REQUEST CONNECTIONS
scenario() {
  local name=$1 per=$2 conns=$3
  start_influx "$name"
  local t0 t1 stored
  t0=$(now); run_wrk lp "$per" "$conns" "/write?db=bench&precision=ms" "Token none"; t1=$(now)
  sleep 0.2
  stored=$(influx_count)
  local i_rate i_p50 i_p99 i_rss i_bad
  i_rate=$(calc "round($stored/($t1-$t0))"); i_p50=$(field p50_ms); i_p99=$(field p99_ms)
  i_bad=$(field not_2xx); i_rss=$(peak_rss_mb)
  echo "  influxdb $name: $(field requests) requests ($i_bad not 2xx), $stored stored, $i_rate readings/s, p50 $i_p50 ms, p99 $i_p99 ms, peak RSS $i_rss MB"
  stop_server

  start_vigia "$name"
  t0=$(now); run_wrk json "$per" "$conns" "/api/v1/readings" "Bearer $token"
  local accepted=$(( $(field requests) * per ))
  until [ "$(vigia_metric vigia_bus_depth_readings)" = "0" ]; do sleep 0.02; done
  t1=$(now)
  stored=$(vigia_metric vigia_store_readings_written_total)
  local v_rate v_p50 v_p99 v_rss v_bad
  v_rate=$(calc "round($stored/($t1-$t0))"); v_p50=$(field p50_ms); v_p99=$(field p99_ms)
  v_bad=$(field not_2xx); v_rss=$(peak_rss_mb)
  echo "  vigia    $name: $(field requests) requests ($v_bad not 2xx; ~$accepted readings answered), $stored stored, $v_rate readings/s end to end, p50 $v_p50 ms, p99 $v_p99 ms, peak RSS $v_rss MB"
  stop_server
  rows+=("| $name | $v_rate | $v_p50 / $v_p99 | $v_rss | $i_rate | $i_p50 / $i_p99 | $i_rss | $(calc "round($v_rate/$i_rate, 2)")× |")
}

echo "side by side: ${seconds}s a scenario, $per_batch readings a batched request, wrk -t $threads"
scenario "batched-16" "$per_batch" 16
scenario "batched-64" "$per_batch" 64
scenario "single-16" 1 16
scenario "single-64" 1 64

start_vigia healthz
result=$(wrk -t "$threads" -c 64 -d "${seconds}s" "$url/healthz" | awk '/Requests\/sec/{print "RESULT rps="$2}')
floor=$(field rps)
stop_server

echo
echo "| scenario | Vigía readings/s | Vigía p50 / p99 ms | Vigía peak RSS MB | InfluxDB 1.6 readings/s | InfluxDB p50 / p99 ms | InfluxDB peak RSS MB | Vigía / InfluxDB |"
echo "|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
echo "GET /healthz floor, 64 connections: $floor requests/s (single-reading goal: ≥ 0.7× of it)"
