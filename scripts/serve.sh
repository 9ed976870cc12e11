#!/usr/bin/env bash
# Runs the PhrFhir server from source. Arguments are passed to the server, e.g.
#   scripts/serve.sh --urls http://127.0.0.1:8080 --Storage:DataDirectory=/var/lib/phrfhir
# Without a configured connection string the server starts its own PostgreSQL from the
# Debian packages (see src/PhrFhir.Storage/Embedded/EmbeddedPostgres.cs); its data, the
# conformance cache and the keys live under ./data (the repository root) unless configured.
#
# Each phase is printed with the seconds since start. The server is published once into
# .build/server and republished only when a source file changed, so a second start skips the
# build (first start on 2 cores: about 1–2 minutes for the build, then the server's own phases).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
started=${SECONDS}
phase() { printf 'serve.sh [%4ds] %s\n' "$((SECONDS - started))" "$*" >&2; }

phase "prerequisites (PostgreSQL binaries, .NET 10 SDK)"
bash scripts/install-prereqs.sh

export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
out=.build/server
stamp="${out}/.built-from"
# Rebuild when any source, project, profile or build setting is newer than the last publish.
if [ ! -f "${stamp}" ] || [ -n "$(find src profiles Directory.Build.props PhrFhir.sln -newer "${stamp}" \
        -not -path '*/bin/*' -not -path '*/obj/*' -print -quit 2>/dev/null)" ]; then
    phase "build: dotnet publish -c Release into ${out} (sources changed or first start)"
    dotnet publish src/PhrFhir.Server -c Release -o "${out}" --nologo -v quiet
    touch "${stamp}"
else
    phase "build: ${out} is up to date"
fi

# Without a clients file of your own, the development clients (examples/auth/clients.dev.json) can get
# tokens; the server listens on 127.0.0.1 only unless --urls says otherwise.
export PHRFHIR_CLIENTS="${PHRFHIR_CLIENTS:-$(pwd)/examples/auth/clients.dev.json}"
# Conformance packages come from https://packages.fhir.org and the publishers (README "Conformance
# packages"). Beside this project's CI checkout, the official packages are in ../shared/ref: name that
# folder as a source (unless sources were given) and keep what it restores in ./data, since some of
# its folders are local builds that must not land in the shared ~/.fhir/packages under official names.
if [ -z "${PHRFHIR_PACKAGE_SOURCES+set}" ] && [ -d ../shared/ref ]; then
    export PHRFHIR_PACKAGE_SOURCES="$(cd ../shared/ref && pwd)"
    export Packages__Cache="${Packages__Cache:-$(pwd)/data/fhir-packages}"
    phase "packages: ../shared/ref is a folder source (cache ${Packages__Cache})"
fi
phase "starting the server (it logs its own phases: PostgreSQL, packages, conformance cache, listening URL)"
exec dotnet "${out}/PhrFhir.Server.dll" "$@"
