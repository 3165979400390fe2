#!/usr/bin/env bash
# Runs every test: go vet, then go test (the concurrent packages with the
# race detector; RACE=all for every package). The tests
# start their own redis-server (internal/testredis) and stripe-mock on free
# loopback ports. Extra arguments replace ./... (e.g. scripts/test.sh ./meter/...).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-deps.sh

# stripe-mock is installed into GOBIN (or GOPATH/bin), which may not be on PATH.
gobin="$(go env GOBIN)"
[ -n "$gobin" ] || gobin="$(go env GOPATH)/bin"
export PATH="$gobin:$PATH"

pkgs=("$@")
[ ${#pkgs[@]} -gt 0 ] || pkgs=(./...)

echo "== go vet ${pkgs[*]}"
go vet "${pkgs[@]}"

# Build once: vet's build is reused by the tests without the race detector.
# The packages whose own code runs concurrently (leases and rate shares,
# settlement workers, the Redis accounts, the ledger flusher) also run under
# -race; they do not import Caddy, so that second build stays smaller.
# RACE=all runs every package under -race (make race).
race_pkgs=(./lease/... ./settle/... ./billing/... ./usagelog/...)
if [ "${RACE:-}" = all ]; then
	echo "== go test -race ${pkgs[*]}"
	go test -race -count=1 -timeout 15m "${pkgs[@]}"
else
	mapfile -t all < <(go list "${pkgs[@]}")
	mapfile -t racy < <(go list "${race_pkgs[@]}")
	plain=()
	for p in "${all[@]}"; do
		[[ " ${racy[*]} " == *" $p "* ]] || plain+=("$p")
	done
	selected=()
	for p in "${racy[@]}"; do
		[[ " ${all[*]} " == *" $p "* ]] && selected+=("$p")
	done
	if [ ${#plain[@]} -gt 0 ]; then
		echo "== go test (${#plain[@]} packages)"
		go test -count=1 -timeout 15m "${plain[@]}"
	fi
	if [ ${#selected[@]} -gt 0 ]; then
		echo "== go test -race ${selected[*]}"
		go test -race -count=1 -timeout 15m "${selected[@]}"
	fi
fi

# A short differential fuzz run of the request reader (one package at a
# time: -fuzz takes one). `make fuzz` runs it longer. Skipped when the
# arguments name packages without ./meter. The run is counted in inputs,
# not seconds: a time limit can end while the engine still replays its
# cached corpus on a loaded machine, which Go reports as a failure
# ("context deadline exceeded").
if [ $# -eq 0 ] || [[ " $* " == *" ./meter"* ]]; then
	echo "== go test -fuzz FuzzRequestOneReading ./meter (${FUZZTIME:-200000x})"
	go test -run '^$' -fuzz '^FuzzRequestOneReading$' -fuzztime "${FUZZTIME:-200000x}" ./meter
fi
