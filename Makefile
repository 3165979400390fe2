# Build, run and test caddy-aitoken (README, "Quickstart").

GO ?= go
CADDY ?= bin/caddy

.PHONY: all build run test race fuzz bench vet clean

all: build

# The custom caddy binary, built from xcaddy.json with xcaddy's builder package.
build:
	$(GO) run ./cmd/xbuild -o $(CADDY)

# Build, start Redis and the mock upstream on free loopback ports, run Caddyfile.example.
run:
	scripts/run.sh

# Every test (the concurrent packages under the race detector); tests start
# their own redis-server.
test:
	scripts/test.sh

# Every test, every package under the race detector (slower: Caddy is built twice).
race:
	RACE=all scripts/test.sh

# The differential fuzz tests of the request reader (meter.ParseRequest
# against encoding/json and exact-key readings) and of its JSON validator
# (against json.Valid), each for FUZZTIME (default 5m). Inputs that fail
# are saved under meter/testdata/fuzz/ and rerun by make test.
FUZZTIME ?= 5m
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzRequestOneReading$$' -fuzztime $(FUZZTIME) ./meter
	$(GO) test -run '^$$' -fuzz '^FuzzValidJSON$$' -fuzztime $(FUZZTIME) ./meter

# The Go micro-benchmarks, then the gateway benchmark (cmd/aitbench: bare
# reverse_proxy vs aitoken, interleaved; prints a table and writes
# docs/benchmarks.md). AITBENCH_FLAGS passes flags, e.g. AITBENCH_FLAGS=-quick.
bench:
	scripts/ensure-deps.sh redis
	$(GO) test -run '^$$' -bench . -benchmem ./...
	$(GO) run ./cmd/aitbench $(AITBENCH_FLAGS)

vet:
	$(GO) vet ./...
	@out=$$(gofmt -l .); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

clean:
	rm -rf bin .run
