# Conveniences over the scripts: `make run` = scripts/run.sh, `make check` = scripts/check.sh.
BUILD ?= build

.PHONY: all run check build deps test-deps unit integration fuzz fuzz-long torture bench clean

all: build

deps:
	@scripts/deps.sh

test-deps:
	@scripts/deps.sh test

build: deps
	@[ -f $(BUILD)/build.ninja ] || meson setup $(BUILD)
	@ninja -C $(BUILD)

# Builds and starts the relay on its embedded defaults (Ctrl-C stops it).
run:
	@scripts/run.sh

# Every test: unit (plain and ASan/UBSan), integration, fuzz smoke.
check:
	@scripts/check.sh

fuzz-long: test-deps
	@FUZZ_SECONDS=$${FUZZ_SECONDS:-300} scripts/fuzz.sh

torture: test-deps
	@scripts/torture.sh long

bench: test-deps build
	@bench/run.sh

clean:
	rm -rf build build-asan build-fuzz
