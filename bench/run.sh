#!/usr/bin/env bash
# Load benchmark of PhrFhir: builds the server and the bench in Release, then runs the bench, which
# starts the server on 127.0.0.1 (its embedded PostgreSQL in bench/data/postgres), times start-up,
# seeds the 100k dataset if it is not there yet, runs the load scenarios and prints the figures.
#   bash bench/run.sh [--seconds N] [--warmup N] [--clients 1,8] [--scenarios read,search] [--fresh] [--port P] [--no-build] [--tsv FILE]
#   bash bench/run.sh --base-url URL [--token T | --token-command CMD] [...]
#     the same rows against any FHIR R4 server already running (peer mode: only the bench is built, nothing started);
#     bench/compare.sh runs ours, then a peer, and prints both side by side.
#   bash bench/run.sh --audit [--seconds N] [--clients 1,2] [--rounds N] [--no-build]
#     ITI-67 with and without authorisation and audit (bench/PhrFhir.AuditBench): builds the server in the
#     Bench configuration (the only build with the Bench:AuthAndAuditOff switch) and runs that bench.
# See bench/README.md for how to read the output.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
server_dll=src/PhrFhir.Server/bin/Release/net10.0/PhrFhir.Server.dll
bench_dll=bench/PhrFhir.Bench/bin/Release/net10.0/PhrFhir.Bench.dll
data_dir=bench/data/postgres
pid_file=bench/data/server.pid

build=1
audit=0
peer=0
args=()
for a in "$@"; do
    case "$a" in
        --no-build) build=0 ;;
        --base-url) peer=1; args+=("$a") ;;
        --audit) audit=1 ;;
        -h|--help) build=0; args+=("$a") ;;
        *) args+=("$a") ;;
    esac
done

# A server left by a bench that was killed outright (SIGKILL, lost terminal): stop it the way the
# bench does, SIGINT (SIGTERM if it ignores SIGINT, as background jobs of a shell do) and wait, so
# its embedded PostgreSQL shuts down too.
wait_gone() {
    local pid="$1" i
    for i in $(seq 1 "$2"); do
        [ -d "/proc/$pid" ] || return 0
        sleep 1
    done
    [ ! -d "/proc/$pid" ]
}
stop_leftover_server() {
    [ -f "$pid_file" ] || return 0
    local pid sig=INT
    pid="$(cat "$pid_file")"
    if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'PhrFhir.Server.dll'; then
        # SigIgn bit 1 (value 2) is SIGINT.
        if (( 0x$(awk '/^SigIgn:/ {print $2}' "/proc/$pid/status") & 2 )); then sig=TERM; fi
        echo "run.sh: stopping server pid $pid left from an earlier bench run (SIG$sig)" >&2
        kill -"$sig" "$pid" 2>/dev/null || true
        if ! wait_gone "$pid" 60; then
            kill -TERM "$pid" 2>/dev/null || true
            if ! wait_gone "$pid" 60; then
                echo "run.sh: server pid $pid still running; SIGKILL" >&2
                kill -KILL "$pid" 2>/dev/null || true
            fi
        fi
    fi
    rm -f "$pid_file"
}
# Conformance packages (README "Conformance packages"): beside this project's checkout the official ones
# are in ../shared/ref; name it as a folder source (unless sources were given), restored into bench/data.
if [ -z "${PHRFHIR_PACKAGE_SOURCES+set}" ] && [ -d ../shared/ref ]; then
    export PHRFHIR_PACKAGE_SOURCES="$(cd ../shared/ref && pwd)"
    export Packages__Cache="${Packages__Cache:-$(pwd)/bench/data/fhir-packages}"
fi
if [ "$audit" = 1 ]; then
    bench_server_dll=src/PhrFhir.Server/bin/Bench/net10.0/PhrFhir.Server.dll
    audit_dll=bench/PhrFhir.AuditBench/bin/Release/net10.0/PhrFhir.AuditBench.dll
    if [ "$build" = 1 ]; then
        echo "building the server (Bench: Release code plus Bench:AuthAndAuditOff) and the audit bench …"
        dotnet build -c Bench -nologo -v q src/PhrFhir.Server
        dotnet build -c Release -nologo -v q bench/PhrFhir.AuditBench
    fi
    [ -f "$bench_server_dll" ] || { echo "run.sh: $bench_server_dll missing (build failed?)" >&2; exit 1; }
    [ -f "$audit_dll" ] || { echo "run.sh: $audit_dll missing (build failed?)" >&2; exit 1; }
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    # The audit bench starts and stops its own servers, on temporary data.
    exec dotnet "$audit_dll" --server-dll "$bench_server_dll" "${args[@]+"${args[@]}"}"
fi

if [ "$peer" = 1 ]; then
    [ "$build" = 0 ] || dotnet build -c Release -nologo -v q bench/PhrFhir.Bench
    echo "date:   $(date -Is)"
    exec dotnet "$bench_dll" "${args[@]}"
fi

stop_leftover_server
trap stop_leftover_server EXIT

if [ "$build" = 1 ]; then
    echo "building server and bench (Release) …"
    dotnet build -c Release -nologo -v q src/PhrFhir.Server
    dotnet build -c Release -nologo -v q bench/PhrFhir.Bench
fi
[ -f "$server_dll" ] || { echo "run.sh: $server_dll missing (build failed?)" >&2; exit 1; }
[ -f "$bench_dll" ] || { echo "run.sh: $bench_dll missing (build failed?)" >&2; exit 1; }

echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?')$( [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] && echo ' (working tree has changes)')"
echo "date:   $(date -Is)"
dotnet "$bench_dll" --server-dll "$server_dll" --data-dir "$data_dir" "${args[@]+"${args[@]}"}"
