# Chiffon — build, test, lint, bench, demo. `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
BIN := bin/chiffon
# SemVer from git describe and scripts/releases.txt (scripts/version.sh).
VERSION ?= $(shell scripts/version.sh 2>/dev/null || echo 0.0.0-dev)
# go-nvml's cgo bindings warn about deprecated NVML calls it merely wraps.
export CGO_ENABLED := 1
export CGO_CFLAGS ?= -O2 -g -Wno-deprecated-declarations
GOPATH_BIN := $(shell $(GO) env GOPATH)/bin
export PATH := $(PATH):$(GOPATH_BIN)
SERF_VERSION := v0.11.0

.PHONY: all build deb deb-test test test-short lint bench demo demo-processes deps serf-cli rabbitmq chromium dbus clean help

all: lint build test

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

build: ## build bin/chiffon
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/chiffon

deb: build ## build dist/chiffon_VERSION_ARCH.deb with dpkg-deb (scripts/deb.sh)
	VERSION=$$(scripts/version.sh --deb) scripts/deb.sh $(BIN)

deb-test: deb ## as root: install, remove and purge the .deb on this machine (scripts/deb-test.sh; CI runs it)
	scripts/deb-test.sh dist/chiffon_$$(scripts/version.sh --deb)_$$(dpkg --print-architecture).deb

serf-cli: ## install the stock serf CLI the tests drive
	@command -v serf >/dev/null || GOFLAGS= $(GO) install github.com/hashicorp/serf/cmd/serf@$(SERF_VERSION)

# Debian's RabbitMQ: the bridge's tests start private brokers with
# scripts/rabbitmq.sh; the package's own service is not used.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
rabbitmq: ## install rabbitmq-server and amqp-tools from Debian if missing
	@[ -x /usr/sbin/rabbitmq-server ] || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq rabbitmq-server amqp-tools >/dev/null; }

chromium: ## install Debian's headless Chromium and ChromeDriver (dashboard test) if missing
	@[ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver >/dev/null; }

dbus: ## install Debian's dbus (probe/owner's tests start a private dbus-daemon) if missing
	@command -v dbus-daemon >/dev/null || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq dbus >/dev/null; }

deps: serf-cli rabbitmq chromium dbus ## everything the tests need

# sim.TestRun_Fleet (the suite's fleet scenario) is built without -race
# only: under the race detector the fleet starves raft (sim/DESIGN.md).
test: deps ## run every test with the race detector, then the sim's fleet scenario without it
	$(GO) test -race -count=1 -timeout 15m ./...
	$(GO) test -count=1 -timeout 5m -run '^TestRun_Fleet$$' ./sim/

test-short: ## unit tests only (skips process-level tests)
	$(GO) test -race -short ./...

lint: ## gofmt + go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

bench: ## Go benchmarks (figures recorded in docs/PERFORMANCE.md)
	$(GO) test -run '^$$' -bench . -benchmem ./...

demo: build ## the whole system in one process: 3 orchestrators + 3 desktops (chiffon dev; AMQP_URL=... adds the work bridge)
	$(BIN) dev $(if $(AMQP_URL),-amqp-url $(AMQP_URL))

demo-processes: build ## the same as separate processes (scripts/cluster.sh), for the failover walkthrough
	scripts/demo.sh

clean: ## remove build output
	rm -rf bin dist
