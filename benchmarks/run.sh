#!/usr/bin/env bash
# Runs the benchmarks matching a filter in Release and copies each markdown summary to bench-results/.
# Installs nothing: native allocators missing on this machine are skipped (see the status lines in the output).
#
#   benchmarks/run.sh '*PageAlloc*'                 # one class
#   benchmarks/run.sh '*PageAlloc*' --disasm        # extra arguments go to BenchmarkDotNet
#
# bench-results/<Class>.md gets BenchmarkDotNet's GitHub-flavoured summary, followed by the commit it ran on and
# the state of each native allocator (loaded, or skipped with the reason). The full log is kept in
# bench-results/tmp/ (not committed).
set -euo pipefail

if [[ $# -lt 1 || "$1" == -* ]]; then
    echo "usage: $0 FILTER [BenchmarkDotNet arguments...]   e.g. $0 '*PageAlloc*'" >&2
    exit 2
fi
filter="$1"
shift

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
artifacts="$root/BenchmarkDotNet.Artifacts"
results="$root/bench-results"
mkdir -p "$results/tmp" "$artifacts/results"
log="$results/tmp/run-$(date +%Y%m%d-%H%M%S).log"
marker="$results/tmp/.run-start"
touch "$marker"
load_start="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)"

# jemalloc needs this before the process starts; the program would relaunch itself otherwise.
case ":${GLIBC_TUNABLES:-}:" in
    *glibc.rtld.optional_static_tls=*) ;;
    *) export GLIBC_TUNABLES="${GLIBC_TUNABLES:+$GLIBC_TUNABLES:}glibc.rtld.optional_static_tls=16384" ;;
esac

cd "$root"
set +e
dotnet run -c Release --project benchmarks/Allocators.Benchmarks -- \
    --filter "$filter" --artifacts "$artifacts" "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

commit="$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
dirty="$(git -C "$root" status --porcelain --untracked-files=no 2>/dev/null | head -c1)"
copied=0
while IFS= read -r -d '' report; do
    name="$(basename "$report" -report-github.md)"
    name="${name#Allocators.Benchmarks.}"
    target="$results/$name.md"
    {
        echo "# $name"
        echo
        echo "Filter \`$filter\`, commit $commit${dirty:+ (with uncommitted changes)}, $(date -u +%Y-%m-%dT%H:%MZ)," \
            "load average at start $load_start, at end $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)" \
            "($(nproc) CPUs; other processes competing for them make the numbers noisy)."
        echo
        cat "$report"
        echo
        echo "Native allocators in this run:"
        echo
        grep '^native-allocator:' "$log" | sed 's/^native-allocator: */- /' || echo "- (no status printed)"
    } > "$target"
    echo "saved $target"
    copied=$((copied + 1))
done < <(find "$artifacts/results" -name '*-report-github.md' -newer "$marker" -print0)

if [[ $copied -eq 0 ]]; then
    echo "no summary was produced (exit code $status); log: $log" >&2
    [[ $status -ne 0 ]] && exit "$status"
    exit 1
fi
exit "$status"
