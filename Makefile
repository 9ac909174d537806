# gpudl: the two commands are `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
REPORT ?= benchmarks/results/gpu-check

# A CPU build of PyTorch, when a local wheel is at hand, gives the tests an independent
# reference (conv, cross-entropy, LSTM, optimizers); without it those comparisons skip.
TORCH_WHEEL := $(firstword $(wildcard /opt/wheels/torch-*+cpu-*.whl))

# The CUDA major version the driver supports ("" when there is no NVIDIA driver).
CUDA_MAJOR := $(shell nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9]*\).*/\1/p' | head -n1)

.PHONY: setup test test-cpu test-slow memcheck-emulated test-emulated-gpu demo lint gpu-check bench bench-cpu clean

setup: $(VENV)/.installed

# CuPy is added only where a driver exists, matching its CUDA major version. Without a
# driver the `test` extra still installs cupy-cuda13x (+ NVRTC) so CI exercises the
# "CuPy present, no GPU" fallback and compiles every kernel.
$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	@if [ "$(CUDA_MAJOR)" = "12" ]; then \
		echo "setup: driver reports CUDA 12 -> cupy-cuda12x"; \
		$(BIN)/pip install -q -e '.[cuda12,monitor,data,plot,dev,onnx,mpi]' pytest hypothesis nbclient ipykernel; \
	elif [ -n "$(CUDA_MAJOR)" ]; then \
		echo "setup: driver reports CUDA $(CUDA_MAJOR) -> cupy-cuda13x"; \
		$(BIN)/pip install -q -e '.[cuda13,test,monitor,data,plot,dev,onnx]'; \
	else \
		echo "setup: no NVIDIA driver -> CPU (cupy-cuda13x installed for the fallback tests)"; \
		$(BIN)/pip install -q -e '.[test,data,plot,dev,onnx]'; \
	fi
	@if [ -n "$(TORCH_WHEEL)" ]; then \
		echo "setup: torch CPU reference from $(TORCH_WHEEL)"; \
		$(BIN)/pip install -q "$(TORCH_WHEEL)" || echo "setup: torch reference not installed"; \
	fi
	touch $@

# The three test sessions are independent processes (the emulator's build cache is written
# atomically), so they run two at a time: on a 2-core machine that is ~40 % less wall time
# than one after another. --output-sync prints each session's output whole when it ends.
test: setup
	$(BIN)/python -m gpudl.compile_check
	$(MAKE) --no-print-directory -j2 --output-sync=target test-cpu memcheck-emulated test-emulated-gpu

# Every test and docstring example that is not `slow`, on the CPU (`gpu` tests skip here).
test-cpu: setup
	$(BIN)/python -m pytest -q -m "not slow" --durations=15 --doctest-modules tests gpudl $(PYTEST_ARGS)

# The long trainings `make test` leaves out (marked `slow`): every check still runs here.
test-slow: setup
	$(BIN)/python -m pytest -q -m "slow" --durations=15 tests $(PYTEST_ARGS)

# The `gpu` tests with gpudl's "cuda" device played by the CPU kernel emulator
# (tests/kernel_emulation/emulated_cupy.py): every GPU code path runs, kernels included.
# Not a GPU: no timing, no memory model, host libm. `make gpu-check` is the real thing.
test-emulated-gpu: setup
	GPUDL_EMULATE_GPU=1 $(BIN)/python -m pytest -q -m "gpu and not slow" -p no:cacheprovider tests $(PYTEST_ARGS)

# Every kernel on the CPU emulator (tests/kernel_emulation) again, built with
# AddressSanitizer: an out-of-bounds access on the tested shapes fails the run.
memcheck-emulated: setup
	$(BIN)/python tests/kernel_emulation/run_memcheck.py

demo: setup
	$(BIN)/python -m gpudl.demo

lint: setup
	$(BIN)/ruff check gpudl tests benchmarks

bench: setup
	$(BIN)/python benchmarks/overhead.py

# Whole training steps and memory-bound kernels against PyTorch on the CPU, one thread each,
# paired; `make bench-cpu BENCH_ARGS=--write` records benchmarks/results/<date>-cpu-vs-torch-*.json
BENCH_ARGS ?=
bench-cpu: setup
	$(BIN)/python benchmarks/cpu_vs_torch.py $(BENCH_ARGS)

# On a GPU machine, offline, with the packages already there (no venv, no pip):
# `make gpu-check PY=python3`. Compile check, `gpu` tests, copy bandwidth, kernel benchmarks,
# overhead and compute-sanitizer memcheck; logs in $(REPORT), the dated summary in
# benchmarks/results/<date>-<device>.json. Extra options (--dry-run, --skip memcheck,
# --budget-s 480) go in GPU_CHECK_ARGS.
GPU_CHECK_ARGS ?=
gpu-check:
	PYTHONPATH=$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH} $(PY) benchmarks/gpu_check.py --out $(REPORT) $(GPU_CHECK_ARGS)

clean:
	rm -rf $(VENV) build dist .pytest_cache
