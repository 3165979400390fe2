#!/usr/bin/env bash
# Runs every test: go vet (every analyzer, as part of go test), then go
# test, the concurrent packages also under the race detector (RACE=all:
# every package), then a short differential fuzz run. The tests start
# their own redis-server (internal/testredis) and stripe-mock on free
# loopback ports. Extra arguments replace ./... (e.g. scripts/test.sh ./meter/...).
#
# On a fresh machine nearly all the time is compiling Caddy's dependency
# tree, so the script compiles each package once per configuration and
# overlaps what waits (downloads, apt-get, tests waiting on sockets) with
# what computes:
#   1. the system packages (ensure-deps.sh) are installed while the Go
#      modules are fetched and compiled; test binaries wait for them;
#   2. `go test -vet=all` runs the plain tests with go vet's full set of
#      checks, each package vetted as soon as it is compiled;
#   3. the race-detector build of the concurrent packages and the fuzz
#      run go on beside it (builds of their own), at a lower priority, so
#      they fill the cores the plain run leaves idle.
set -euo pipefail
cd "$(dirname "$0")/.."

logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT

# stripe-mock is installed into GOBIN (or GOPATH/bin), which may not be on PATH.
gobin="$(go env GOBIN)"
[ -n "$gobin" ] || gobin="$(go env GOPATH)/bin"
export PATH="$gobin:$PATH"

pkgs=("$@")
[ ${#pkgs[@]} -gt 0 ] || pkgs=(./...)

# The test build is lighter than a production one, for the same code:
# third-party and standard packages are compiled without inlining (-l: a
# third less CPU, and they behave the same), no package gets DWARF debug
# data (-dwarf=false: 8 % less CPU to compile; nothing in a test reads it,
# since stack traces and race reports read the pclntab, which stays) and
# test binaries are linked without the symbol table (-s: a 125 MB test
# binary becomes 105 MB). This module's packages and the runtime are
# otherwise compiled as for production; make build, make run and make
# bench use the default flags throughout. GOFLAGS, so that the caddy
# binaries the tests build, and stripe-mock when ensure-deps.sh installs
# it, share the compiled packages (the standard library above all).
export GOFLAGS="${GOFLAGS:+$GOFLAGS }'-gcflags=all=-l -dwarf=false' -gcflags=runtime=-dwarf=false -gcflags=github.com/cnaitoken/caddy-aitoken/...=-dwarf=false -ldflags=-s"

# System packages (redis-server, chromium, stripe-mock) are installed
# while the Go builds start; each test binary waits for them
# (scripts/await-deps.sh, as go test -exec) before it runs.
export AITOKEN_DEPS_RC="$logs/deps.rc"
(
	rc=0
	scripts/ensure-deps.sh >"$logs/deps" 2>&1 || rc=$?
	echo "$rc" >"$logs/deps.rc.tmp"
	mv "$logs/deps.rc.tmp" "$AITOKEN_DEPS_RC"
) &
deps=$!
await=(-exec "$PWD/scripts/await-deps.sh")

# run NAME CMD...: runs CMD in the background, its output kept in a file
# and printed when it is done (so parallel runs do not interleave).
run() {
	local name="$1"
	shift
	(
		rc=0
		"$@" >"$logs/$name" 2>&1 || rc=$?
		echo "$rc" >"$logs/$name.rc"
	) &
}
# report NAME PID: waits for a run and prints its output; fails with it.
report() {
	wait "$2" || true
	cat "$logs/$1"
	[ "$(cat "$logs/$1.rc")" = 0 ] || { echo "FAIL: $1" >&2; return 1; }
}

status=0

# A short differential fuzz run of the request reader, in the background
# from the start (its instrumented build is its own). `make fuzz` runs it
# longer. Skipped when the arguments name packages without ./meter. The
# run is counted in inputs, not seconds: a time limit can end while the
# engine still replays its cached corpus on a loaded machine, which Go
# reports as a failure ("context deadline exceeded").
if [ $# -eq 0 ] || [[ " $* " == *" ./meter"* ]]; then
	echo "== go test -fuzz FuzzRequestOneReading ./meter (${FUZZTIME:-200000x}, in the background)"
	run fuzz nice go test -vet=off -run '^$' -fuzz '^FuzzRequestOneReading$' -fuzztime "${FUZZTIME:-200000x}" ./meter
	fuzz=$!
fi

if [ "${RACE:-}" = all ]; then
	echo "== go test -race -vet=all ${pkgs[*]}"
	go test -race -vet=all "${await[@]}" -count=1 -timeout 15m "${pkgs[@]}" || status=1
else
	# The packages whose own code runs concurrently (leases and rate
	# shares, settlement workers, the Redis accounts, the ledger flusher)
	# run under -race, in the background: a build of its own, so nothing
	# is compiled twice.
	race_pkgs=(./lease/... ./settle/... ./billing/... ./usagelog/...)
	# Machine-made code they link is compiled without race
	# instrumentation (a quarter less CPU for the race build): SQLite
	# translated from C, with its C library, and the tokenizer's
	# vocabulary tables. The race detector still watches this module, the
	# SQLite driver, go-redis, zap and the standard library.
	norace=()
	for p in modernc.org/sqlite/lib modernc.org/libc/... github.com/tiktoken-go/tokenizer/...; do
		norace+=("-gcflags=$p=-l -dwarf=false -race=false")
	done
	mapfile -t all < <(go list -find "${pkgs[@]}")
	mapfile -t racy < <(go list -find "${race_pkgs[@]}")
	plain=() selected=()
	for p in "${all[@]}"; do
		if [[ " ${racy[*]} " == *" $p "* ]]; then
			selected+=("$p")
		else
			plain+=("$p")
		fi
	done
	if [ ${#selected[@]} -gt 0 ]; then
		echo "== go test -race ${selected[*]} (in the background)"
		run race nice go test -race "${norace[@]}" -vet=off "${await[@]}" -count=1 -timeout 15m "${selected[@]}"
		race=$!
	fi
	if [ ${#plain[@]} -gt 0 ]; then
		echo "== go test -vet=all (${#plain[@]} packages)"
		go test -vet=all "${await[@]}" -count=1 -timeout 15m "${plain[@]}" || status=1
	fi
	if [ ${#selected[@]} -gt 0 ]; then
		# go vet of the race-tested packages, as part of go test (no test
		# is run again): the facts of their dependencies are in the cache.
		echo "== go vet ${selected[*]}"
		go test -vet=all -run '^$' -count=1 "${selected[@]}" || status=1
	fi
fi

wait "$deps" || true
if [ "$(cat "$AITOKEN_DEPS_RC")" != 0 ]; then
	cat "$logs/deps" >&2
	echo "FAIL: scripts/ensure-deps.sh" >&2
	status=1
else
	grep '^ensure-deps' "$logs/deps" || true
fi
if [ -n "${fuzz:-}" ]; then
	echo "== go test -fuzz (output)"
	report fuzz "$fuzz" || status=1
fi
if [ -n "${race:-}" ]; then
	echo "== go test -race (output)"
	report race "$race" || status=1
fi

if [ $# -eq 0 ] && out=$(gofmt -l .) && [ -n "$out" ]; then
	echo "gofmt needed:"
	echo "$out"
	status=1
fi
exit "$status"
