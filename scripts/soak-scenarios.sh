#!/usr/bin/env bash
# Soak test for the scenario runner: runs catalog scenarios in short form,
# one after another, until SECS seconds have passed, and prints every run
# that failed or had to start a sender twice (with the end of its output).
# Flaky starts show up here long before CI meets them; run it beside a
# build (e.g. `cargo build --release`) to add the load CI has.
#
#   scripts/soak-scenarios.sh                              # 15 minutes, 4 scenarios
#   SECS=3600 SCENARIOS="ramp crash-restart" scripts/soak-scenarios.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-900}
SCENARIOS=${SCENARIOS:-"permanent-4xx ramp rate-limited-429 redirects"}
BIN=${HOOKSHIFT_BIN:-target/debug/hookshift}
[ -x "$BIN" ] || cargo build -p hookshift
reports=$(mktemp -d)
trap 'rm -rf "$reports"' EXIT
end=$(( $(date +%s) + SECS ))
runs=0 bad=0
while [ "$(date +%s)" -lt "$end" ]; do
    for s in $SCENARIOS; do
        runs=$((runs + 1))
        rc=0
        out=$("$BIN" scenario run --short --no-progress "scenarios/catalog/$s.toml" --reports "$reports/$runs" 2>&1) || rc=$?
        if [ "$rc" -ne 0 ] || grep -q "warning: .*exited" <<<"$out"; then
            bad=$((bad + 1))
            echo "=== run $runs: $s (exit $rc)"
            tail -30 <<<"$out"
        fi
        rm -rf "${reports:?}/$runs"
        printf '\r%d runs, %d with trouble, %ds left ' "$runs" "$bad" $(( end - $(date +%s) )) >&2
    done
done
echo >&2
echo "soak: $runs runs, $bad with trouble"
[ "$bad" -eq 0 ]
