-- wrk script: signed POSTs of a constant body, each with its own delivery id.
--
-- wrk's Lua has no HMAC, and the body never changes, so bench/load.py signs once per receiver
-- (any scheme: see bench/payload.py) and passes everything through the environment:
--   WRK_BODY_FILE       path of the request body
--   WRK_HEADERS         the constant headers, one "Name: value" per line (signature included)
--   WRK_DELIVERY_PREFIX 23 characters ("xxxxxxxx-xxxx-xxxx-xxxx") unique to this wrk run
--   WRK_UNIQUE_HEADER   the header that carries the per-request id (default X-GitHub-Delivery);
--                       the receiver's dedup key, so it must be one no signature covers
--   WRK_COUNT_STATUSES  "1": count the answers by status (done() reports them as "statuses");
--                       off by default, as wrk then reads every response's headers and body
-- The id is the prefix, the thread number and a per-thread counter, shaped like the UUIDs
-- GitHub sends, so no two requests of any run repeat one.
-- done() prints one line "WRK_RESULT {json}" that bench/load.py parses.

local function required_env(name)
  local value = os.getenv(name)
  if value == nil or value == "" then
    error(name .. " is not set; run this script through bench/load.py")
  end
  return value
end

local thread_count = 0
local threads = {} -- for done(), which runs in the main state: each thread's counts

function setup(thread)
  thread:set("thread_number", thread_count)
  thread_count = thread_count + 1
  table.insert(threads, thread)
end

local head, tail -- the request's bytes before and after the delivery id
local prefix
local counter = 0

function init(args)
  local file = assert(io.open(required_env("WRK_BODY_FILE"), "rb"))
  local body = file:read("*a")
  file:close()

  local headers = {}
  for line in required_env("WRK_HEADERS"):gmatch("[^\n]+") do
    local name, value = line:match("^([^:]+):%s*(.*)$")
    headers[name] = value
  end
  local unique_header = os.getenv("WRK_UNIQUE_HEADER")
  if unique_header == nil or unique_header == "" then
    unique_header = "X-GitHub-Delivery"
  end
  local marker = "@DELIVERY@"
  headers[unique_header] = marker

  -- Build the request once; per request only the id is spliced in.
  local request_bytes = wrk.format("POST", nil, headers, body)
  local at = request_bytes:find(marker, 1, true)
  head = request_bytes:sub(1, at - 1)
  tail = request_bytes:sub(at + #marker)
  prefix = string.format("%s-%02x", required_env("WRK_DELIVERY_PREFIX"), thread_number)
end

function request()
  counter = counter + 1
  return head .. prefix .. string.format("%010x", counter) .. tail
end

if os.getenv("WRK_COUNT_STATUSES") == "1" then
  statuses = {} -- a global, so that done() can fetch it with thread:get

  function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
  end
end

local function status_counts()
  local totals = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses") or {}) do
      totals[status] = (totals[status] or 0) + count
    end
  end
  local fields = {}
  for status, count in pairs(totals) do
    table.insert(fields, string.format('"%d":%d', status, count))
  end
  return "{" .. table.concat(fields, ",") .. "}"
end

function done(summary, latency, requests)
  local errors = summary.errors
  local fields = {
    string.format('"duration_us":%d', summary.duration),
    string.format('"requests":%d', summary.requests),
    string.format('"bytes":%d', summary.bytes),
    string.format('"non_2xx_3xx":%d', errors.status),
    string.format('"connect_errors":%d', errors.connect),
    string.format('"read_errors":%d', errors.read),
    string.format('"write_errors":%d', errors.write),
    string.format('"timeouts":%d', errors.timeout),
    string.format('"latency_mean_us":%.1f', latency.mean),
    string.format('"latency_max_us":%d', latency.max),
  }
  for _, p in ipairs({50, 75, 90, 99, 99.9}) do
    table.insert(fields, string.format('"latency_p%s_us":%d', tostring(p), latency:percentile(p)))
  end
  if response ~= nil then
    table.insert(fields, '"statuses":' .. status_counts())
  end
  io.write("WRK_RESULT {" .. table.concat(fields, ",") .. "}\n")
end
