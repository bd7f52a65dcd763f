-- wrk script: POST the callback template with a new JobId in every request, print a JSON summary.
--
-- wrk -t1 -c64 -d10s -s bench/callback.lua URL -- TEMPLATE MARKER RUN LIMIT [DONE]
--   TEMPLATE  path of the XML body; MARKER  the JobId in it, replaced in every request
--   RUN       8 hex digits naming this run (JobIds never repeat across runs on one database)
--   LIMIT     stop each thread after this many responses (0: only the -d duration bounds the run)
--   DONE      a file created when a thread reaches LIMIT: wrk itself sleeps out -d, so the caller
--             watches for it and ends wrk early with SIGINT (which still prints the summary)
-- JobId = "j" .. RUN .. thread (2 hex) .. request counter (22 decimal digits): 33 characters, all hex.

local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

local prefix, suffix, run, limit, done_path
-- Globals, so that done() can read them from each thread with thread:get().
sent, answered, accepted, duplicate, refused = 0, 0, 0, 0, 0

function init(args)
  local file = assert(io.open(args[1], "rb"))
  local body = file:read("*a")
  file:close()
  local first, last = body:find(args[2], 1, true)
  assert(first, "the template does not contain the marker")
  prefix, suffix = body:sub(1, first - 1), body:sub(last + 1)
  run, limit, done_path = args[3], tonumber(args[4]), args[5]
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/xml"
end

function request()
  sent = sent + 1
  local job_id = string.format("j%s%02x%022d", run, tid, sent)
  return wrk.format(nil, nil, nil, prefix .. job_id .. suffix)
end

function response(status, headers, body)
  answered = answered + 1
  if status ~= 200 then
    refused = refused + 1
  elseif body:find("accepted", 1, true) then
    accepted = accepted + 1
  else
    duplicate = duplicate + 1
  end
  if limit > 0 and answered == limit then
    if done_path then
      io.open(done_path, "w"):close()
    end
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local totals = { sent = 0, answered = 0, accepted = 0, duplicate = 0, refused = 0 }
  for _, thread in ipairs(threads) do
    for key, _ in pairs(totals) do
      totals[key] = totals[key] + (thread:get(key) or 0)
    end
  end
  local errors = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d,'
      .. ' "mean_us": %.1f, "sent": %d, "answered": %d, "accepted": %d, "duplicate": %d, "refused": %d,'
      .. ' "socket_errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, totals.sent, totals.answered, totals.accepted,
    totals.duplicate, totals.refused,
    errors.connect + errors.read + errors.write + errors.timeout
  ))
end
