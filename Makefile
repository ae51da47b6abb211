# georep build, test and lint entry points. `make test` is THE test command
# (CI runs `make lint` then `make test`, see .ci/run).

GO       ?= go
BIN      ?= bin/georep
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS  := -X main.version=$(VERSION)
FUZZTIME ?= 20s

# Pinned tool versions (make tools).
BUF_VERSION                ?= v1.75.0
PROTOC_GEN_GO_VERSION      ?= v1.36.12
PROTOC_GEN_GO_GRPC_VERSION ?= v1.6.2
GRPCURL_VERSION            ?= v1.9.4
# The version grpc-go itself requires, so the generated code and the
# runtime helpers it imports agree.
VTPROTO_VERSION            ?= v0.6.1-0.20240319094008-0393e58bdf10

.PHONY: all build proto test unit fuzz lint lint-deploy bench bench-compare tools clean demo

all: build

## build: the georep binary in bin/
build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/georep

## proto: regenerate the Go stubs from proto/ (needs make tools), and the
## commented descriptor set server reflection serves to grpcurl, then build
proto:
	buf generate
	buf build -o proto/georep/v1/slave.binpb --path proto/georep/v1/slave.proto
	$(GO) build ./...

## test: every package under the race detector, then a short fuzz run
test: unit fuzz

unit:
	$(GO) test -race -count=1 ./...

## fuzz: the backend's entry-op fuzzer for FUZZTIME
fuzz:
	$(GO) test ./server/backend -run '^$$' -fuzz FuzzEntryOps -fuzztime $(FUZZTIME) -fuzzminimizetime 2s

## lint: gofmt, go vet and buf lint must all be clean, and deploy/ must check out
lint: lint-deploy
	@unformatted="$$(gofmt -l .)"; \
	if [ -n "$$unformatted" ]; then echo "gofmt needed on:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	buf lint

## lint-deploy: systemd-analyze verify on deploy/systemd (against a copy
## that runs bin/georep), and deploy/'s tests: the Kubernetes manifests decoded
## strictly into k8s.io/api types, the Dockerfile's rules, a static build
lint-deploy: build
	deploy/systemd/verify.sh $(BIN)
	$(GO) test -count=1 ./deploy

## bench: every micro-benchmark once, with allocations, then the data-plane
## comparison (bench-compare) in the same run
bench: build
	$(GO) test -run '^$$' -bench . -benchmem ./...
	$(MAKE) bench-compare

## bench-compare: the data plane alone, issue 5's workload: georep native,
## georep --sync-mode rsync and rsync -aHAX on the same trees and sshd, on
## loopback and at 50 ms RTT (about 10 minutes). Rewrites the "Data plane vs
## rsync" section of BENCHMARKS.md and docs/bench-data-plane.png, unless
## GEOREP_BENCH_WRITE= (empty) or the workload is shrunk. Shrink it for a
## quick run (the table goes to stdout) with GEOREP_BENCH_SMALL (files,
## 20000), GEOREP_BENCH_SMALL_SIZE (4096), GEOREP_BENCH_LARGE (4),
## GEOREP_BENCH_LARGE_MIB (32), GEOREP_BENCH_RUNS (5), GEOREP_BENCH_WAN=0,
## GEOREP_BENCH_TOOLS=georep,georep-rsync,rsync (a subset of georep, georep-live,
## georep-rsync, rsync, rsync-aesgcm)
GEOREP_BENCH_WRITE ?= $(CURDIR)
bench-compare: build
	GEOREP_BENCH_GEOREP=$(abspath $(BIN)) GEOREP_BENCH_WRITE=$(GEOREP_BENCH_WRITE) \
		$(GO) test -tags benchcompare -run '^$$' -bench DataPlaneVsRsync -benchtime 1x -timeout 90m ./bench

## tools: install the pinned code generators and grpcurl into $(go env GOPATH)/bin
tools:
	$(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
	$(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	$(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	$(GO) install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)
	$(GO) install github.com/planetscale/vtprotobuf/cmd/protoc-gen-go-vtproto@$(VTPROTO_VERSION)

## demo: build, then replicate a small tree to a local slave and show the status
demo: build
	scripts/demo.sh

## clean: remove build outputs
clean:
	rm -rf bin
