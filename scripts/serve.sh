#!/usr/bin/env bash
# Runs the PhrFhir server from source. Arguments are passed to the server, e.g.
#   scripts/serve.sh --urls http://127.0.0.1:8080 --Storage:DataDirectory=/var/lib/phrfhir
# Without a configured connection string the server starts its own PostgreSQL from the
# Debian packages (see src/PhrFhir.Storage/Embedded/EmbeddedPostgres.cs).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install-prereqs.sh
# Without a clients file of your own, the development clients (examples/auth/clients.dev.json) can get
# tokens; the server listens on 127.0.0.1 only unless --urls says otherwise.
export PHRFHIR_CLIENTS="${PHRFHIR_CLIENTS:-$(pwd)/examples/auth/clients.dev.json}"
exec dotnet run --project src/PhrFhir.Server -c Release -- "$@"
