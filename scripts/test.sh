#!/usr/bin/env bash
# Runs every test: go vet, then go test with the race detector. The tests
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

echo "== go test -race ${pkgs[*]}"
go test -race -count=1 -timeout 15m "${pkgs[@]}"

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
