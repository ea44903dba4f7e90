# syncproxy — see README.md. Recipes are plain POSIX sh.

GO       ?= go
FUZZTIME ?= 30s
SOAK     ?= 10m
HISTORY  ?= 2m

.PHONY: all test vet deps build bench soak history-soak fuzz clean

all: test

# test installs redis-server, redis-tools and prometheus when missing, then vets and runs every
# test under the race detector; plain `go test` also runs the fuzz seed corpora.
test: deps
	$(GO) vet ./...
	$(GO) test -race -timeout 15m ./...

vet:
	$(GO) vet ./...

# deps installs what the tests need: redis-server and redis-benchmark (the tests
# start real servers), a C compiler (the race detector needs cgo), chromium
# (the status page is tested in a headless browser), and Debian's prometheus
# package (promtool checks and unit tests deploy/prometheus; a real Prometheus
# server runs the alert rules against the proxy). apt-get only; elsewhere it
# says what to install.
deps:
	@missing=; \
	if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-benchmark >/dev/null 2>&1; then \
		missing="redis-server redis-tools"; \
	fi; \
	command -v "$$($(GO) env CC)" >/dev/null 2>&1 || missing="$$missing gcc libc6-dev"; \
	command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing="$$missing chromium"; \
	{ command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; } || missing="$$missing prometheus"; \
	[ -z "$$missing" ] && exit 0; \
	if ! command -v apt-get >/dev/null 2>&1; then \
		echo "make: missing: $$missing" >&2; \
		echo "make: install redis-server 7 and redis-tools (redis-cli, redis-benchmark), chromium, prometheus and promtool (2.x: prometheus.io/download), and a C compiler for go test -race (e.g. 'brew install redis prometheus' on macOS, 'dnf install redis gcc' on Fedora)" >&2; \
		exit 1; \
	fi; \
	sudo=; \
	if [ "$$(id -u)" != 0 ]; then \
		if command -v sudo >/dev/null 2>&1; then sudo=sudo; else \
			echo "make: need root or sudo to install: $$missing" >&2; exit 1; \
		fi; \
	fi; \
	echo "make: installing $$missing with apt-get"; \
	$$sudo apt-get update -qq && \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing && \
	{ command -v redis-server >/dev/null 2>&1 && command -v redis-benchmark >/dev/null 2>&1 && \
		command -v promtool >/dev/null 2>&1; } || \
	{ echo "make: redis-server, redis-benchmark or promtool still missing after apt-get install" >&2; exit 1; }

build:
	$(GO) build -o bin/syncproxy ./cmd/syncproxy

# bench starts its own servers and syncproxy, and the peers it finds (predixy at
# ../shared/bin/predixy, twemproxy: Debian's nutcracker; a missing one's row says
# "not found"), and prints issue 15's table and targets; see internal/bench and
# README's Benchmarks (about 4 minutes on 2 cores). Then what idle clients and one
# large request cost the proxy in memory (BenchmarkIdleClients).
bench: deps
	$(GO) run ./internal/bench
	$(GO) test -run '^$$' -bench '^BenchmarkIdleClients$$' -benchtime 1x ./internal/e2e

# soak runs TestSoak for SOAK: mixed load from 50 clients through the proxy while
# a slave is restarted every minute, a line of figures every 10s, then the slaves
# must equal the master (see internal/e2e/soak_test.go); then history-soak. Not
# part of make test.
soak: deps
	$(GO) test -run '^TestSoak$$' -count 1 -v -timeout 0 ./internal/e2e -soak $(SOAK)
	$(MAKE) history-soak

# history-soak runs TestHistorySoak for HISTORY: 8 clients through two proxies, a
# slave held back with CLIENT PAUSE and the other restarted every 20s, every
# operation recorded and the history checked (see internal/history).
history-soak: deps
	$(GO) test -run '^TestHistorySoak$$' -count 1 -v -timeout 0 ./internal/e2e -history $(HISTORY)

# fuzz runs every Fuzz target of the module for FUZZTIME each.
fuzz:
	@list=$$($(GO) test -list '^Fuzz' ./...) || { echo "$$list"; exit 1; }; \
	targets=$$(echo "$$list" | awk '/^Fuzz/ { f[n++] = $$1; next } /^ok/ { for (i = 0; i < n; i++) print $$2, f[i]; n = 0 }'); \
	[ -n "$$targets" ] || { echo "make: no fuzz targets"; exit 0; }; \
	echo "$$targets" | while read -r pkg name; do \
		echo "fuzz $$pkg $$name for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) "$$pkg" || exit 1; \
	done

clean:
	rm -rf bin
