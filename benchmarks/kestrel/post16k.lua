-- wrk script: POST a 16 KiB body to the echo endpoint.
wrk.method = "POST"
wrk.body = string.rep("x", 16384)
wrk.headers["Content-Type"] = "application/octet-stream"
