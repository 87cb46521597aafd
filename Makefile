# VIVI bridge. The two commands a newcomer needs: `make demo` and `make test`.
GO        ?= go
STATICCHECK_VERSION := v0.8.2
BIN       := bin/vivi-bridge

.PHONY: demo run build test check lint fmt vet staticcheck bench fuzz tidy-check redis

demo: ## run the whole system on this machine with fakes: one simulated call as a timeline
	$(GO) run ./cmd/vivi-bridge demo

run: ## run the server (needs the environment of README "Configuration")
	$(GO) run ./cmd/vivi-bridge serve

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) ./cmd/vivi-bridge
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/callsim ./cmd/callsim

redis: ## start Redis on 127.0.0.1:6379 when none answers
	@scripts/ensure-redis.sh

test: redis ## all tests with the race detector, against real Redis
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...

check: lint test ## everything CI is strict about: the lint checks, then every test (what .ci/run runs)

lint: fmt vet staticcheck tidy-check ## gofmt, go vet, staticcheck, go.mod/go.sum tidy; no tests

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

staticcheck:
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

# tidy-check never writes go.mod or go.sum: `go mod tidy -diff` (Go 1.23+) only
# prints the changes tidy would make and fails when there are any.
tidy-check:
	@$(GO) mod tidy -diff || { echo "tidy-check: go.mod/go.sum are not tidy (run go mod tidy)"; exit 1; }

FUZZTIME ?= 20s
# Every fuzz target of the repository, as package:Name (a test in cmd/vivi-bridge
# checks that this list names every func Fuzz* in the tree).
FUZZ_TARGETS := \
	./twiml:FuzzParseExtension ./twiml:FuzzVoiceForm ./twiml:FuzzReferStatus \
	./bridge:FuzzTwilioToModel ./bridge:FuzzModelToTwilio ./bridge:FuzzSplitDelta ./bridge:FuzzCallerNumber \
	./bridge/realtime:FuzzParseEvent ./bridge/internal/jsonscan:FuzzScanner ./bridge/internal/wsframe:FuzzReader \
	./channel:FuzzParseConfig ./channel:FuzzEventsTarget ./delivery:FuzzRetryAfter ./session:FuzzTokenVerify \
	./cmd/vivi-bridge:FuzzPodCommand ./internal/redact:FuzzText ./analysis:FuzzParseResult ./usage:FuzzParsePrices
fuzz: ## a short run of every fuzz target (FUZZTIME=20s each)
	@set -e; for t in $(FUZZ_TARGETS); do \
	  pkg=$${t%%:*}; name=$${t##*:}; \
	  echo "$(GO) test $$pkg -run '^$$' -fuzz '^'$$name'$$' -fuzztime $(FUZZTIME)"; \
	  $(GO) test $$pkg -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME); \
	done

BENCH_CALLS ?= 100 300 500 1000
BENCH_HOLD  ?= 30s
bench: ## per-frame Go benchmarks and callsim runs at $(BENCH_CALLS) calls, written to BENCHMARKS.md
	@mkdir -p bin/bench
	$(GO) test -run '^$$' -bench . -benchmem ./bridge/... > bin/bench/go.txt || { cat bin/bench/go.txt; exit 1; }
	@cat bin/bench/go.txt
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) ./cmd/vivi-bridge
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/callsim ./cmd/callsim
	@rm -f bin/bench/calls-*.json
	@for n in $(BENCH_CALLS); do \
	  cmd="bin/callsim -bridge-bin $(BIN) -calls $$n -ramp $$((n / 50 + 2))s -duration $(BENCH_HOLD) -json"; \
	  echo "$$cmd"; $$cmd > bin/bench/calls-$$n.json || exit 1; \
	done
	bin/callsim markdown -o BENCHMARKS.md -go bin/bench/go.txt bin/bench/calls-*.json
	@echo "bench: results in BENCHMARKS.md (raw JSON in bin/bench/)"
