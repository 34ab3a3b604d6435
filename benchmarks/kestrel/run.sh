#!/usr/bin/env bash
# Kestrel with its own memory pool against Kestrel with Allocators' pool, measured with wrk over 127.0.0.1.
#
#   benchmarks/kestrel/run.sh                 # 5 interleaved rounds of 20 s per workload, then the burst test
#   ROUNDS=3 DURATION=10 benchmarks/kestrel/run.sh
#   SKIP_BURST=1 / SKIP_THROUGHPUT=1          # one half only
#
# Throughput: each round starts a fresh server per pool (kestrel first, then allocators), warms it up, then runs
# wrk (2 threads, 32 connections) on GET /1k, GET /64k and a 16 KiB POST echo. The table has the median over the
# rounds of requests/s and of wrk's p99 latency.
# Burst (per pool, fresh server): 1 KiB load for BURST_STEADY s, RSS read (the steady state); 4 MiB POST echoes
# on 8 connections for BURST s (peak RSS: VmHWM); then no load, RSS read every 5 s for 60 s.
# Needs wrk (apt-get install -y wrk); installs nothing itself. Prints a markdown table at the end.
set -euo pipefail

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-20}
BURST=${BURST:-10}
BURST_STEADY=${BURST_STEADY:-10}
PORT=${PORT:-5097}
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$root/bench-results/tmp/kestrel-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"
command -v wrk >/dev/null || { echo "wrk not found (apt-get install -y wrk)" >&2; exit 2; }

dotnet build "$here/KestrelBench.csproj" -c Release -nologo -v q >/dev/null
dll="$here/bin/Release/net10.0/KestrelBench.dll"
url="http://127.0.0.1:$PORT"
server=""

start_server() {
    dotnet "$dll" --pool "$1" --port "$PORT" >"$out/server-$1.log" 2>&1 &
    server=$!
    for _ in $(seq 100); do curl -sf "$url/stats" >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "server ($1) did not start" >&2; exit 1
}

stop_server() {
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    server=""
}
trap 'stop_server' EXIT

# wrk's p99 in ms from its --latency distribution.
p99_ms() { awk '$1 == "99%" { v = $2; if (v ~ /us$/) { sub(/us/, "", v); v /= 1000 } else if (v ~ /ms$/) { sub(/ms/, "", v) } else if (v ~ /s$/) { sub(/s/, "", v); v *= 1000 } print v }' "$1"; }
rps() { awk '/^Requests\/sec:/ { print $2 }' "$1"; }

run_wrk() { # name pool round args...
    local name=$1 pool=$2 round=$3; shift 3
    local log="$out/$name-$pool-$round.txt"
    wrk -t2 -c32 -d"${DURATION}s" --latency "$@" >"$log"
    echo "$name $pool $round $(rps "$log") $(p99_ms "$log")" >>"$out/results.txt"
    echo "  $name $pool: $(rps "$log") req/s, p99 $(p99_ms "$log") ms"
}

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$server/status"; }
hwm_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$server/status"; }

if [[ -z "${SKIP_THROUGHPUT:-}" ]]; then
    for round in $(seq "$ROUNDS"); do
        echo "round $round/$ROUNDS (load $(cut -d' ' -f1-3 /proc/loadavg))"
        for pool in kestrel allocators; do
            start_server "$pool"
            wrk -t2 -c32 -d3s "$url/1k" >/dev/null
            wrk -t2 -c32 -d3s -s "$here/post16k.lua" "$url/echo" >/dev/null
            run_wrk 1k "$pool" "$round" "$url/1k"
            run_wrk 64k "$pool" "$round" "$url/64k"
            run_wrk echo16k "$pool" "$round" -s "$here/post16k.lua" "$url/echo"
            stop_server
        done
    done
fi

if [[ -z "${SKIP_BURST:-}" ]]; then
    for pool in kestrel allocators; do
        echo "burst: $pool"
        start_server "$pool"
        wrk -t2 -c32 -d"${BURST_STEADY}s" "$url/1k" >/dev/null
        steady=$(rss_kb)
        wrk -t2 -c8 -d"${BURST}s" -s "$here/post4m.lua" "$url/echo" >"$out/burst-$pool.txt"
        peak=$(hwm_kb)
        samples=""
        back=""
        for t in 5 10 15 20 25 30 35 40 45 50 55 60; do
            sleep 5
            r=$(rss_kb)
            samples="$samples $((r / 1024))"
            if [[ -z "$back" ]] && (( r * 10 <= steady * 11 )); then back=$t; fi
        done
        echo "$pool $((steady / 1024)) $((peak / 1024)) $((r / 1024)) ${back:-never}" >>"$out/burst.txt"
        echo "  steady $((steady / 1024)) MiB, peak $((peak / 1024)) MiB, every 5 s after:$samples MiB; $(curl -s "$url/stats")"
        stop_server
    done
fi

echo
echo "Machine: $(nproc) CPUs, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo); load at end $(cut -d' ' -f1-3 /proc/loadavg); logs in $out"
if [[ -f "$out/results.txt" ]]; then
    echo
    echo "| workload | Kestrel's pool req/s | Allocators req/s | ratio | Kestrel's pool p99 ms | Allocators p99 ms |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: |"
    for name in 1k 64k echo16k; do
        med() { awk -v n="$name" -v p="$1" -v c="$2" '$1 == n && $2 == p { print $c }' "$out/results.txt" | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
        k=$(med kestrel 4); a=$(med allocators 4); kp=$(med kestrel 5); ap=$(med allocators 5)
        label=$name; [[ $name == 1k ]] && label="GET 1 KiB"; [[ $name == 64k ]] && label="GET 64 KiB"; [[ $name == echo16k ]] && label="POST 16 KiB echo"
        printf '| %s | %.0f | %.0f | %.2f | %.2f | %.2f |\n' "$label" "$k" "$a" "$(echo "$a / $k" | bc -l)" "$kp" "$ap"
    done
fi
if [[ -f "$out/burst.txt" ]]; then
    echo
    echo "| pool | steady RSS MiB | peak RSS MiB | RSS 60 s after MiB | back within 10 % of steady after |"
    echo "| --- | ---: | ---: | ---: | ---: |"
    while read -r pool steady peak last back; do
        [[ $back != never ]] && back="$back s"
        printf '| %s | %s | %s | %s | %s |\n' "$pool" "$steady" "$peak" "$last" "$back"
    done <"$out/burst.txt"
fi
