-- wrk script for bench/run's proxy section: POSTs a small non-streaming chat
-- completion (model from BENCH_MODEL, max_tokens from BENCH_MAX_TOKENS) and,
-- when the run ends, prints one line "BENCH {json}" with the request count,
-- the duration, the error counts and latency percentiles in microseconds.
local model = os.getenv("BENCH_MODEL") or "m"
local max_tokens = tonumber(os.getenv("BENCH_MAX_TOKENS") or "16")

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = string.format(
    '{"model":"%s","max_tokens":%d,"messages":[{"role":"user","content":"Say hello to the benchmark."}]}',
    model, max_tokens)

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        'BENCH {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,' ..
        '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
        summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
        e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
        latency.max, latency.mean))
end
