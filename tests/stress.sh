#!/usr/bin/env bash
# Runs pytest RUNS times beside two CPU-bound processes, as on a busy shared CI host, and counts
# the runs that passed: a test whose outcome moves with thread scheduling fails here first.
# Usage: tests/stress.sh RUNS PYTHON [pytest arguments...] (the Makefile's `test-stress`).
set -u
runs=$1 python=$2
shift 2
busy=()
for _ in 1 2; do
  "$python" -c "while True: pass" &
  busy+=("$!")
done
trap 'kill "${busy[@]}" 2>/dev/null' EXIT
log=$(mktemp)
passed=0 failed=0
for run in $(seq 1 "$runs"); do
  if "$python" -m pytest -q -p no:cacheprovider "$@" >"$log" 2>&1; then
    passed=$((passed + 1))
    echo "stress: run $run of $runs: $(tail -n 1 "$log")"
  else
    failed=$((failed + 1))
    echo "stress: run $run of $runs FAILED:"
    grep -E "^(FAILED|ERROR)|Error|assert" "$log" | head -n 20
  fi
done
rm -f "$log"
echo "stress: $passed of $runs runs passed beside two busy loops"
[ "$failed" -eq 0 ]
