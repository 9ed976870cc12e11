#!/usr/bin/env bash
# Builds PhrFhir and runs every test:
#   1. dotnet test on the whole solution (Release);
#   2. if examples/postman/*.postman_collection.json exist: starts the built server on a free
#      loopback port with a fresh data directory and package cache, and runs each collection with newman.
#      Against the same server: the OpenAPI check (tests/api/validate-openapi.js) and the README's curl
#      walk-throughs as written (tests/api/readme-walkthroughs.js).
# Exits non-zero if anything failed. The last line is "N passed, N failed, N skipped",
# counting dotnet tests and newman assertions.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo_root="$(pwd)"

bash scripts/install-prereqs.sh

export DOTNET_CLI_TELEMETRY_OPTOUT=1
export DOTNET_NOLOGO=1
export DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

# Conformance packages (docs/validation.md, "Conformance packages"): this project's CI has no internet,
# and its official packages are in ../shared/ref: one more folder source, named here (the server itself
# never looks for it). The test fixtures do the same for the servers they start.
if [ -z "${PHRFHIR_PACKAGE_SOURCES:-}" ] && [ -d "${repo_root}/../shared/ref" ]; then
    PHRFHIR_PACKAGE_SOURCES="$(cd "${repo_root}/../shared/ref" && pwd)"
    export PHRFHIR_PACKAGE_SOURCES
fi

work_dir="$(mktemp -d /tmp/phrfhir-test.XXXXXX)"
# The embedded PostgreSQL runs as the 'postgres' OS user when we are root: it must be able to
# enter this directory (mktemp makes it 0700).
chmod 755 "${work_dir}"
server_pid=""

stop_server() {
    if [ -n "${server_pid}" ] && kill -0 "${server_pid}" 2>/dev/null; then
        kill -TERM "${server_pid}" 2>/dev/null || true
        for _ in $(seq 1 300); do
            kill -0 "${server_pid}" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "${server_pid}" 2>/dev/null; then
            echo "test.sh: server did not stop within 30 s; killing it" >&2
            kill -KILL "${server_pid}" 2>/dev/null || true
        fi
        wait "${server_pid}" 2>/dev/null || true
    fi
    server_pid=""
    # A PostgreSQL the server left behind (e.g. after SIGKILL): fast shutdown via SIGINT.
    local pidfile pg_pid
    while IFS= read -r -d '' pidfile; do
        pg_pid="$(head -n 1 "${pidfile}" 2>/dev/null || true)"
        if [[ "${pg_pid}" =~ ^[0-9]+$ ]] && kill -0 "${pg_pid}" 2>/dev/null; then
            kill -INT "${pg_pid}" 2>/dev/null || true
            for _ in $(seq 1 300); do
                [ -e "${pidfile}" ] || break
                sleep 0.1
            done
        fi
    done < <(find "${work_dir}" -name postmaster.pid -print0 2>/dev/null)
}

cleanup() {
    local status=$?
    stop_server
    rm -rf "${work_dir}"
    exit "${status}"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

total_passed=0
total_failed=0
total_skipped=0
failures=0

# ---------------------------------------------------------------------------------------------
# 1. build and unit/integration tests
# ---------------------------------------------------------------------------------------------
dotnet build -c Release PhrFhir.sln

test_log="${work_dir}/dotnet-test.log"
set +e
dotnet test PhrFhir.sln -c Release --no-build --logger "console;verbosity=normal" 2>&1 | tee "${test_log}"
test_status=${PIPESTATUS[0]}
set -e
if [ "${test_status}" -ne 0 ]; then
    echo "test.sh: dotnet test failed (exit code ${test_status})" >&2
    failures=$((failures + 1))
fi

# The console logger closes each test assembly with either one line (minimal verbosity)
#   "Passed!  - Failed:     0, Passed:    42, Skipped:     1, Total:    43, Duration: 3 s - X.dll"
# or a block (normal verbosity)
#   "Total tests: 43" / "     Passed: 42" / "     Failed: 1" / "    Skipped: 1"
summary_log="${work_dir}/dotnet-test-summary.log"
if grep -aqE 'Failed: +[0-9]+, Passed: +[0-9]+' "${test_log}"; then
    grep -aE 'Failed: +[0-9]+, Passed: +[0-9]+' "${test_log}" | tr ',' '\n' > "${summary_log}"
else
    grep -aE '^ *(Passed|Failed|Skipped): +[0-9]+ *$' "${test_log}" > "${summary_log}" || true
fi
sum_field() {
    { grep -aoE "${1}: +[0-9]+" "${summary_log}" || true; } | awk '{ s += $2 } END { print s + 0 }'
}
dotnet_passed="$(sum_field Passed)"
dotnet_failed="$(sum_field Failed)"
dotnet_skipped="$(sum_field Skipped)"
total_passed=$((total_passed + dotnet_passed))
total_failed=$((total_failed + dotnet_failed))
total_skipped=$((total_skipped + dotnet_skipped))
echo "dotnet test: ${dotnet_passed} passed, ${dotnet_failed} failed, ${dotnet_skipped} skipped"

# ---------------------------------------------------------------------------------------------
# 2. Postman collections against the running server
# ---------------------------------------------------------------------------------------------
shopt -s nullglob
collections=(examples/postman/*.postman_collection.json)
shopt -u nullglob

if [ "${#collections[@]}" -gt 0 ]; then
    npm install --no-audit --no-fund --loglevel=error

    port="$(node -e '
        const s = require("net").createServer();
        s.listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });
    ')"
    base_url="http://127.0.0.1:${port}"
    server_dir="${repo_root}/src/PhrFhir.Server/bin/Release/net10.0"
    server_log="${work_dir}/server.log"
    data_dir="${work_dir}/data"

    echo "test.sh: starting the server on ${base_url} (data ${data_dir}, log ${server_log})"
    # Run from the output directory so that the server finds its appsettings.json.
    # Subscriptions.postman_collection.json subscribes an endpoint there (nothing listens: the handshake fails, status error).
    (cd "${server_dir}" && PHRFHIR_CLIENTS="${repo_root}/examples/auth/clients.dev.json" PHRFHIR_SUBSCRIPTION_ENDPOINTS="http://127.0.0.1:9/" \
        exec dotnet PhrFhir.Server.dll --urls "${base_url}" "--Storage:DataDirectory=${data_dir}" "--Auth:SigningKeyFile=${work_dir}/signing-key.pem" \
            "--Packages:Cache=${work_dir}/fhir-packages") \
        >"${server_log}" 2>&1 </dev/null &
    server_pid=$!

    ready=0
    deadline=$((SECONDS + 120))
    while [ "${SECONDS}" -lt "${deadline}" ]; do
        if ! kill -0 "${server_pid}" 2>/dev/null; then
            break
        fi
        code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "${base_url}/healthz" || true)"
        if [ "${code}" = "200" ]; then
            ready=1
            break
        fi
        sleep 1
    done

    if [ "${ready}" -ne 1 ]; then
        echo "test.sh: the server did not answer 200 on ${base_url}/healthz within 120 s; its log:" >&2
        tail -n 100 "${server_log}" >&2 || true
        failures=$((failures + 1))
        total_failed=$((total_failed + ${#collections[@]}))
    else
        n=0
        for collection in "${collections[@]}"; do
            n=$((n + 1))
            report="${work_dir}/newman-${n}.json"
            echo "test.sh: newman run ${collection}"
            if ! npx newman run "${collection}" \
                --env-var "baseUrl=${base_url}" \
                --env-var "clientId=kenshin-a" \
                --env-var "clientSecret=kenshin-a-secret-change-me" \
                --reporters cli,json \
                --reporter-json-export "${report}"; then
                failures=$((failures + 1))
            fi
            if [ -s "${report}" ]; then
                read -r c_passed c_failed < <(node -e '
                    const run = require(process.argv[1]).run;
                    const a = run.stats.assertions;
                    console.log(Math.max(0, a.total - a.failed), run.failures.length);
                ' "${report}")
            else
                c_passed=0
                c_failed=1
            fi
            total_passed=$((total_passed + c_passed))
            total_failed=$((total_failed + c_failed))
        done
        # The OpenAPI description, checked by an independent validator (one assertion).
        if node tests/api/validate-openapi.js "${base_url}"; then
            total_passed=$((total_passed + 1))
        else
            total_failed=$((total_failed + 1))
        fi
        # The README's curl walk-throughs, run as written against this server (one assertion each).
        if read -r r_passed r_failed < <(node tests/api/readme-walkthroughs.js "${base_url}" || true) \
            && [ -n "${r_failed:-}" ]; then
            total_passed=$((total_passed + r_passed))
            total_failed=$((total_failed + r_failed))
        else
            total_failed=$((total_failed + 1))
        fi
        # A SMART Health Link's files decrypted by an independent JOSE implementation (npm jose; one assertion).
        if node tests/api/shl-decrypt.mjs "${base_url}"; then
            total_passed=$((total_passed + 1))
        else
            total_failed=$((total_failed + 1))
        fi
    fi
    stop_server
fi

echo "${total_passed} passed, ${total_failed} failed, ${total_skipped} skipped"
if [ "${failures}" -ne 0 ] || [ "${total_failed}" -ne 0 ]; then
    exit 1
fi
