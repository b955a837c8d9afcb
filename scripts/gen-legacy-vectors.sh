#!/usr/bin/env bash
# Regenerates fixtures/vectors/legacy-golden.jsonl from the real legacy Go
# sender: builds fixtures/legacy-go/cmd/legacy-sender, pipes every line of
# fixtures/vectors/legacy-inputs.jsonl through `legacy-sender oracle`, and
# writes one `{"input": <input line>, "output": <oracle answer>}` per line.
# engine/tests/legacy_vectors.rs then checks the engine against it without Go.
#
# Usage: scripts/gen-legacy-vectors.sh [--regen-inputs]
#   --regen-inputs  first rewrite legacy-inputs.jsonl (hand-picked edge cases
#                   plus cases from the conformance generator with a fixed
#                   seed) by running the ignored test `write_legacy_inputs`.
# Needs: go (and cargo for --regen-inputs). HOOKSHIFT_REPO_ROOT overrides the
# repository root (default: this script's parent directory).
set -euo pipefail

root="${HOOKSHIFT_REPO_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
vectors="$root/fixtures/vectors"
inputs="$vectors/legacy-inputs.jsonl"
golden="$vectors/legacy-golden.jsonl"

case "${1:-}" in
  "") ;;
  --regen-inputs)
    (cd "$root" && HOOKSHIFT_WRITE_LEGACY_INPUTS=1 HOOKSHIFT_REPO_ROOT="$root" \
      cargo test -p engine --test legacy_vectors -- --ignored --exact write_legacy_inputs --nocapture)
    ;;
  *) echo "usage: $0 [--regen-inputs]" >&2; exit 2 ;;
esac

command -v go >/dev/null || { echo "gen-legacy-vectors: go not found on PATH" >&2; exit 1; }
[[ -f "$inputs" ]] || { echo "gen-legacy-vectors: $inputs missing (use --regen-inputs)" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$root/fixtures/legacy-go" && go build -o "$tmp/legacy-sender" ./cmd/legacy-sender)
"$tmp/legacy-sender" oracle <"$inputs" >"$tmp/outputs.jsonl"

n_in="$(wc -l <"$inputs")"
n_out="$(wc -l <"$tmp/outputs.jsonl")"
if [[ "$n_in" != "$n_out" ]]; then
  echo "gen-legacy-vectors: $n_in input lines but $n_out oracle answers" >&2
  exit 1
fi

# JSON lines hold no raw newlines, so the two files pair up line by line.
while IFS= read -r input <&3 && IFS= read -r output <&4; do
  printf '{"input":%s,"output":%s}\n' "$input" "$output"
done 3<"$inputs" 4<"$tmp/outputs.jsonl" >"$tmp/golden.jsonl"

mv "$tmp/golden.jsonl" "$golden"
echo "wrote $n_in vectors to $golden"
