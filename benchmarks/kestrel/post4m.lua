-- wrk script: POST a 4 MiB body to the echo endpoint (the burst).
wrk.method = "POST"
wrk.body = string.rep("y", 4 * 1024 * 1024)
wrk.headers["Content-Type"] = "application/octet-stream"
