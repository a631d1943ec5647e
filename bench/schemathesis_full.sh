#!/usr/bin/env bash
# The full contract check: schemathesis with every check against a live `phenolab api` (no
# worker, so submits stay queued) on a throw-away embedded store, once without a token and once
# with one. Prints schemathesis' summary of each run. The test suite runs the same at a smaller
# count (tests/test_service_openapi.py).
#   bash bench/schemathesis_full.sh [MAX_EXAMPLES_PER_OPERATION]   (default 100: > 5,000 cases)
set -euo pipefail
cd "$(dirname "$0")/.."
examples="${1:-100}"
home="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$home"' EXIT
run() {  # $1: port, $2: token or empty
  env PHENOLAB_HOME="$home/$1" PHENOLAB_API_HOST=127.0.0.1 PHENOLAB_API_PORT="$1" \
    ${2:+PHENOLAB_API_TOKEN="$2"} MLFLOW_TRACKING_URI="sqlite:///$home/$1.db" \
    .venv/bin/phenolab api > "$home/api-$1.log" 2>&1 &
  for _ in $(seq 120); do curl -s -o /dev/null "http://127.0.0.1:$1/openapi.json" && break; sleep 0.5; done
  local auth=()
  [ -n "$2" ] && auth=(-H "Authorization: Bearer $2")
  echo "== token: ${2:-none}"
  .venv/bin/st --config-file tests/schemathesis.toml run "http://127.0.0.1:$1/openapi.json" \
    --checks all -n "$examples" --phases examples,fuzzing,stateful --no-color \
    --request-timeout 30 --generation-database none "${auth[@]}" | tail -25
}
run 18471 ""
run 18472 "s3cret-full-run"
