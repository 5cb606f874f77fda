-- wrk's results as one JSON object, for the load-test scripts (wrk -s loadtest/wrk-report.lua).
--
-- wrk's text report rounds and switches units (us, ms, s) from line to line;
-- reading the numbers here, in wrk's own microseconds, keeps every digit and
-- spares the scripts a parser. Only done() is defined: a per-request
-- response() hook would run Lua on every reply and slow wrk down in exactly
-- the scenarios where it must keep up.
--
-- The line starts with {"wrk": so a script can tell it from wrk's text.
-- errors counts what wrk counts: socket connect/read/write errors, timeouts
-- (a request still unanswered after --timeout, counted again at each 2 s
-- check it stays unanswered, and left out of the latency histogram), and
-- HTTP statuses above 399.

local function ms(us)
  return us / 1000.0
end

done = function(summary, latency, requests)
  local e = summary.errors
  local errors = e.connect + e.read + e.write + e.timeout + e.status
  local secs = summary.duration / 1e6
  local rps = 0
  if secs > 0 then
    rps = summary.requests / secs
  end
  local out = string.format(
    '{"wrk":1,"requests":%d,"duration_s":%.3f,"rps":%.1f,"errors":%d,'
      .. '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,"status_errors":%d',
    summary.requests, secs, rps, errors, e.connect, e.read, e.write, e.timeout, e.status)
  -- With no completed request there is no latency to report; zeros would
  -- read as a perfect result.
  if summary.requests > 0 then
    out = out .. string.format(
      ',"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"p999_ms":%.3f,"max_ms":%.3f,"mean_ms":%.3f',
      ms(latency:percentile(50)), ms(latency:percentile(90)), ms(latency:percentile(99)),
      ms(latency:percentile(99.9)), ms(latency.max), ms(latency.mean))
  end
  io.write(out .. "}\n")
end
