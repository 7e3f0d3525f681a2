-- wrk script: every request carries readings no other request carries (unique
-- (sensor, ts) across threads and requests), as JSON for Vigía or line protocol for
-- InfluxDB, built here so both servers get the same readings from the same client.
--
-- Environment: FORMAT=json|lp, PER_REQUEST (readings per body), BASE_MS (first ts),
-- SENSORS (distinct sensors), THREADS (wrk's -t, to interleave the sequences).

local format = os.getenv("FORMAT") or "json"
local per_request = tonumber(os.getenv("PER_REQUEST") or "1000")
local base_ms = tonumber(os.getenv("BASE_MS"))
local sensors = tonumber(os.getenv("SENSORS") or "100")
local thread_count = tonumber(os.getenv("THREADS") or "2")

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

local sequence

function init(args)
  sequence = id
  if format == "json" then
    wrk.headers["Content-Type"] = "application/json"
  else
    wrk.headers["Content-Type"] = "text/plain"
  end
end

-- Reading k of body s: sensor k mod SENSORS, ts advancing so that no (sensor, ts) repeats.
local function body(s)
  local parts = {}
  local first = s * per_request
  for k = 0, per_request - 1 do
    local n = first + k
    local sensor = n % sensors
    local ts = base_ms + math.floor(n / sensors)
    local value = -20.0 + (n % 17) * 0.13
    if format == "json" then
      parts[#parts + 1] = string.format(
        '{"sensor":"CF-%d","metric":"temperature","ts":%d,"value":%.2f}', sensor, ts, value)
    else
      parts[#parts + 1] = string.format(
        "temperature,sensor=CF-%d value=%.2f %d000000\n", sensor, value, ts)
    end
  end
  if format == "json" then
    return "[" .. table.concat(parts, ",") .. "]"
  end
  return table.concat(parts)
end

function request()
  local s = sequence
  sequence = sequence + thread_count
  return wrk.format("POST", nil, nil, body(s))
end

function done(summary, latency, requests)
  local not_2xx = summary.errors.status
  io.write(string.format(
    "RESULT requests=%d not_2xx=%d socket_errors=%d p50_ms=%.2f p99_ms=%.2f seconds=%.3f\n",
    summary.requests, not_2xx,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, summary.duration / 1e6))
end
