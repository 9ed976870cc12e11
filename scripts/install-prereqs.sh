#!/usr/bin/env bash
# Installs what PhrFhir needs on a fresh Debian/Ubuntu machine, and nothing when it is all there.
#   - PostgreSQL server binaries (the server runs its own private cluster from them)
#   - Node.js + npm (only for the Postman/newman API tests in scripts/test.sh)
#   - curl (health checks in scripts/test.sh) and openssl (examples/quickstart/person-app.sh, run by a test)
# The .NET 10 SDK cannot be installed from Debian's archive: it is only checked for.
# Idempotent; prints nothing when everything is present.
set -euo pipefail

log() { printf 'install-prereqs: %s\n' "$*" >&2; }

have_postgres() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        if [ -x "${d}/initdb" ] && [ -x "${d}/pg_ctl" ]; then
            return 0
        fi
    done
    command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1
}

packages=()
if ! have_postgres; then
    packages+=(postgresql)
fi
if ! command -v npm >/dev/null 2>&1; then
    if ! command -v node >/dev/null 2>&1; then
        packages+=(nodejs)
    fi
    packages+=(npm)
fi
if ! command -v curl >/dev/null 2>&1; then
    packages+=(curl)
fi
if ! command -v openssl >/dev/null 2>&1; then
    packages+=(openssl)
fi

if [ "${#packages[@]}" -gt 0 ]; then
    sudo_cmd=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo_cmd=(sudo)
        else
            log "need root or sudo to install: ${packages[*]}"
            exit 1
        fi
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        log "apt-get not found; install these packages by hand: ${packages[*]}"
        exit 1
    fi
    log "installing: ${packages[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${sudo_cmd[@]}" apt-get update -qq
    "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
    if ! have_postgres; then
        log "PostgreSQL binaries still not found after installing postgresql"
        exit 1
    fi
fi

# .NET 10 SDK
dotnet_bin="$(command -v dotnet 2>/dev/null || true)"
if [ -z "${dotnet_bin}" ]; then
    for candidate in "${DOTNET_ROOT:-}/dotnet" "${HOME:-/root}/.dotnet/dotnet" /usr/share/dotnet/dotnet /usr/lib/dotnet/dotnet; do
        if [ -x "${candidate}" ]; then
            log "found ${candidate}, but dotnet is not on PATH: export PATH=\"$(dirname "${candidate}"):\$PATH\""
            exit 1
        fi
    done
    # Ubuntu (24.04 and later) ships the SDK in its own archive; Debian does not.
    if command -v apt-cache >/dev/null 2>&1 \
        && apt-cache policy dotnet-sdk-10.0 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        log "installing the .NET 10 SDK from the distribution (dotnet-sdk-10.0)"
        sudo_cmd=()
        if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
        DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends dotnet-sdk-10.0 >/dev/null
        dotnet_bin="$(command -v dotnet)"
    else
        log "the .NET 10 SDK is not installed, and this distribution has no package for it (Debian has none)."
        log "install it with Microsoft's script, then run this command again:"
        log "  curl -sSL https://dot.net/v1/dotnet-install.sh -o /tmp/dotnet-install.sh"
        log "  sudo bash /tmp/dotnet-install.sh --channel 10.0 --install-dir /usr/share/dotnet"
        log "  sudo ln -sf /usr/share/dotnet/dotnet /usr/local/bin/dotnet"
        log "(or Microsoft's package feed: https://learn.microsoft.com/dotnet/core/install/linux-debian)"
        exit 1
    fi
fi
if ! "${dotnet_bin}" --list-sdks 2>/dev/null | grep -q '^10\.'; then
    log "dotnet is installed (${dotnet_bin}) but has no 10.x SDK; installed SDKs:"
    "${dotnet_bin}" --list-sdks >&2 || true
    log "install the .NET 10 SDK, see https://learn.microsoft.com/dotnet/core/install/linux"
    exit 1
fi
