#!/usr/bin/env bash
# Runs every test hookshift has, setting up what they need first:
#   1. PostgreSQL (installed from Debian's packages and started when run as
#      root; see scripts/postgres.sh), so the store and API tests run on both
#      backends;
#   2. chromium under CI=true (the comparator's HTML report test);
#   3. cargo test --workspace;
#   4. the legacy Go fixture's go vet and go test.
# On a developer machine without PostgreSQL or Go, those parts skip with a
# notice. Under CI=true nothing may skip: a missing piece fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
ci=${CI:-}

if pg_env=$(scripts/postgres.sh); then
  eval "$pg_env"
else
  if [ "$ci" = true ]; then echo "test.sh: PostgreSQL could not be set up and CI=true" >&2; exit 1; fi
  echo "notice: PostgreSQL is not available; its test cases will skip" >&2
fi

# Headless Chromium renders the comparator's index.html in its test; CI
# installs it (Debian's package), elsewhere that test skips with a notice.
if ! command -v chromium >/dev/null 2>&1 && [ "$ci" = true ]; then
  echo "== installing chromium (comparator HTML report test)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
    || { echo "test.sh: chromium could not be installed and CI=true" >&2; exit 1; }
fi

echo "== cargo test --workspace"
cargo test --workspace

if command -v go >/dev/null 2>&1; then
  echo "== legacy Go fixture: go vet, go test"
  (cd fixtures/legacy-go && go vet ./... && go test ./...)
else
  if [ "$ci" = true ]; then echo "test.sh: go is not installed and CI=true" >&2; exit 1; fi
  echo "notice: go is not installed; skipping the legacy fixture's tests" >&2
fi
