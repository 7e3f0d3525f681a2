-- wrk script: each thread POSTs its share of pre-built line protocol bodies once, then
-- stops. Once a thread has sent its share, its other connections send a cheap GET of
-- the write path (405 on both servers, not counted) until the last write is answered. Bodies are BODIES_DIR/<i>.lp, i in [0, BODIES); WRITE_PATH and AUTH (a full
-- Authorization header value) come from the environment.
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  local dir = os.getenv("BODIES_DIR")
  local count = tonumber(os.getenv("BODIES"))
  local nthreads = tonumber(os.getenv("THREADS"))
  local path = os.getenv("WRITE_PATH")
  local headers = { ["Authorization"] = os.getenv("AUTH"), ["Content-Type"] = "text/plain" }
  requests = {}
  for i = id, count - 1, nthreads do
    local f = assert(io.open(dir .. "/" .. i .. ".lp", "rb"))
    requests[#requests + 1] = wrk.format("POST", path, headers, f:read("*a"))
    f:close()
  end
  filler = wrk.format("GET", path)
  next_request, answered, failed = 1, 0, 0
end

function request()
  local r = requests[next_request]
  if r == nil then return filler end
  next_request = next_request + 1
  return r
end

function response(status, headers, body)
  if status == 405 then return end -- a filler
  answered = answered + 1
  if status ~= 204 then
    failed = failed + 1
    if failed <= 3 then io.stderr:write("status " .. status .. ": " .. body .. "\n") end
  end
  if answered >= #requests then wrk.thread:stop() end
end

function done(summary, latency, requests)
  local answered_total, failed_total = 0, 0
  for _, t in ipairs(threads) do
    answered_total = answered_total + t:get("answered")
    failed_total = failed_total + t:get("failed")
  end
  -- Latency percentiles include the few filler GETs at the end.
  io.write(string.format("wrk: %d writes answered, %d not 204, p50 %.1f ms, p99 %.1f ms\n",
    answered_total, failed_total, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
