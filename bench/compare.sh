#!/usr/bin/env bash
# Issue #12's five rows against our server, then against a peer FHIR R4 server, one at a time, and both
# tables side by side with the ratio (ours ÷ peer). See bench/README.md "Comparing with a peer".
#   bash bench/compare.sh --base-url URL [--token T | --token-command CMD] [--peer-start CMD] [--peer-stop CMD]
#                         [--seconds N] [--clients 1,8] [--scenarios read,create,search,iti65,iti67] [--no-build]
# --peer-start / --peer-stop: shell commands run before / after the peer's run (e.g. `docker start hapi`),
# so the peer does not share the machine with our run; the bench waits for the peer's /metadata.
# Other arguments (--seconds, --clients, --scenarios, --warmup, --mhd-iti65, --server-pid …) go to both runs
# where they apply. The two tables are kept in bench/data/compare-{ours,peer}.tsv.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
base_url="" peer_start="" peer_stop="" build=1
common=() peer_only=()
while [ $# -gt 0 ]; do
    case "$1" in
        --base-url) base_url="$2"; shift 2 ;;
        --token|--token-command|--server-pid|--postgres-data) peer_only+=("$1" "$2"); shift 2 ;;
        --mhd-iti65|--plain-iti65) peer_only+=("$1"); shift ;;
        --peer-start) peer_start="$2"; shift 2 ;;
        --peer-stop) peer_stop="$2"; shift 2 ;;
        --no-build) build=0; shift ;;
        --seconds|--warmup|--clients|--scenarios) common+=("$1" "$2"); shift 2 ;;
        *) echo "compare.sh: unknown argument '$1' (see the comment at the top of bench/compare.sh)" >&2; exit 2 ;;
    esac
done
[ -n "$base_url" ] || { echo "compare.sh: --base-url URL of the peer is required" >&2; exit 2; }

mkdir -p bench/data
ours=bench/data/compare-ours.tsv peer=bench/data/compare-peer.tsv
rm -f "$ours" "$peer"

echo "==== ours (bench/run.sh: starts our server on bench/data/postgres, stops it after) ===="
build_arg=(); [ "$build" = 1 ] || build_arg=(--no-build)
bash bench/run.sh "${build_arg[@]+"${build_arg[@]}"}" "${common[@]+"${common[@]}"}" --tsv "$ours"

echo
echo "==== peer: $base_url ===="
if [ -n "$peer_start" ]; then echo "peer start: $peer_start"; sh -c "$peer_start"; fi
status=0
dotnet bench/PhrFhir.Bench/bin/Release/net10.0/PhrFhir.Bench.dll --base-url "$base_url" \
    "${peer_only[@]+"${peer_only[@]}"}" "${common[@]+"${common[@]}"}" --tsv "$peer" || status=$?
if [ -n "$peer_stop" ]; then echo "peer stop: $peer_stop"; sh -c "$peer_stop"; fi
[ -f "$ours" ] && [ -f "$peer" ] || { echo "compare.sh: a run did not finish (status $status); no comparison" >&2; exit 1; }

echo
echo "==== side by side (ratio = ours ÷ peer in req/s; p95 in ms) ===="
awk -F'\t' '
    FNR == 1 { next }
    FNR == NR { key = $1 FS $2; rps[key] = $4; p95[key] = $6; err[key] = $8; order[++n] = key; next }
    { key = $1 FS $2; prps[key] = $4; pp95[key] = $6; perr[key] = $8 }
    END {
        printf "%-8s %7s  %10s %10s  %6s   %8s %8s   %s\n", "row", "clients", "ours/s", "peer/s", "ratio", "ours p95", "peer p95", "errors ours/peer"
        for (i = 1; i <= n; i++) {
            k = order[i]; split(k, f, FS)
            if (!(k in prps)) { printf "%-8s %7s  %10s %10s  %6s\n", f[1], f[2], rps[k], "-", "-"; continue }
            ratio = prps[k] > 0 ? sprintf("%.2fx", rps[k] / prps[k]) : "-"
            printf "%-8s %7s  %10s %10s  %6s   %8s %8s   %s/%s\n", f[1], f[2], rps[k], prps[k], ratio, p95[k], pp95[k], err[k], perr[k]
        }
    }' "$ours" "$peer"
echo "load average now: $(cut -d' ' -f1-3 /proc/loadavg) (compare runs made at similar load only)"
