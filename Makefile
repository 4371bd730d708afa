# Thin wrapper over Meson for the two README commands and the extra targets.
BUILD ?= build

.PHONY: all run check build deps test-deps unit integration fuzz fuzz-long torture bench clean

all: build

deps:
	@scripts/deps.sh

test-deps:
	@scripts/deps.sh test

build: deps
	@[ -f $(BUILD)/build.ninja ] || meson setup $(BUILD) >/dev/null
	@ninja -C $(BUILD)

# Builds and starts the relay on its embedded defaults (Ctrl-C stops it).
run: build
	./$(BUILD)/sluice serve

# Every test: unit (plain and ASan/UBSan), integration, fuzz smoke.
check: test-deps
	@scripts/check.sh

fuzz-long: test-deps
	@FUZZ_SECONDS=$${FUZZ_SECONDS:-300} scripts/fuzz.sh

torture: test-deps
	@scripts/torture.sh long

bench: test-deps build
	@bench/run.sh

clean:
	rm -rf build build-asan build-fuzz
