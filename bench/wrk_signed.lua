-- wrk script: POST pre-signed webhooks, each thread walking its own slice so no body repeats.
-- Arguments (after --): bodies file, headers file (one line each, aligned), thread count, path,
-- and "stop" to end a thread once its slice is sent (hooktrack dedupes repeats; the bare
-- endpoint does not care, so it may cycle).
local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end

function init(args)
  bodies, sigs = {}, {}
  for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
  for line in io.lines(args[2]) do sigs[#sigs + 1] = line end
  nthreads = tonumber(args[3])
  path = args[4]
  stop_on_wrap = args[5] == "stop"
  i = tid + 1
  wrapped = 0
end

function request()
  local body, sig = bodies[i], sigs[i]
  i = i + nthreads
  if i > #bodies then i = tid + 1; wrapped = wrapped + 1 end
  return wrk.format("POST", path, {["Stripe-Signature"] = sig, ["Content-Type"] = "application/json"}, body)
end

-- Stop a thread once it has sent its whole slice, so no webhook is sent twice.
function response(status, headers, body)
  if stop_on_wrap and wrapped > 0 then wrk.thread:stop() end
end

function done(summary, latency, requests)
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "non2xx": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
