-- wrk: the summary line every benchmark script ends with, which
-- common.wrk() reads. Loaded by the scripts with dofile.
function done(summary, latency, requests)
	io.write(string.format("RESULT requests=%d duration_us=%d non2xx=%d errors=%d p50_us=%d p99_us=%d\n",
		summary.requests, summary.duration, summary.errors.status,
		summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
		latency:percentile(50), latency:percentile(99)))
end
