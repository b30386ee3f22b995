# The two commands a newcomer needs (see README.md): `make book` and `make test`.
# Each creates .venv when it is missing and installs the project into it.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# The datasets beside the checkout (read-only is fine); RESMOOTH_DATA overrides it.
export RESMOOTH_DATA ?= $(abspath ../shared/data)
export PYTHONHASHSEED := 0

.PHONY: install test unit nbval browser book notebooks benchmark clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[train,test,book,ray,integrations]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

# Unit, property and end-to-end tests, nbval over every chapter of the book, then the reader's
# test of the built book in headless Chromium.
test: unit nbval browser

# oneDNN and ATen choose their CPU kernels by instruction set, so a float32 network's numbers
# (from its random initial weights on) differ from one machine to the next. The stored outputs
# are written on the native path (`make notebooks`); the tests run on another one, ATen's
# portable kernels and oneDNN at AVX2 at most, so that an output or a tolerance that holds on
# one kind of CPU only fails here, on the developer's machine, before a reader's. (oneDNN at
# SSE41, `make test PORTABLE_CPU="ONEDNN_MAX_CPU_ISA=SSE41 ATEN_CPU_CAPABILITY=default"`, is
# another such path, five times slower for the book's convolutions.)
PORTABLE_CPU ?= ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=default

unit: $(STAMP)
	$(PORTABLE_CPU) $(BIN)/python -m pytest tests --ignore=tests/browser --durations=15

nbval: $(STAMP)
	$(PORTABLE_CPU) $(BIN)/python -m pytest -p no:cacheprovider --nbval --nbval-sanitize-with book/sanitize.cfg book

# The reader's test (tests/browser): every chapter in _toc.yml opened in headless Chromium from a
# loopback server; it fails on a broken image, unrendered math or an error in an output cell.
# Builds the book first (from the stored outputs) when a chapter, the configuration or the library
# is newer than the build, and installs Debian's chromium (apt-get, as root) when it is missing.
CHROMIUM    ?= /usr/bin/chromium
BOOK_INPUTS := _config.yml _toc.yml $(wildcard book/* book/*/* resmooth/*.py resmooth/*/*.py resmooth/*/*/*.py)

browser: $(STAMP) _build/html/searchindex.js $(CHROMIUM)
	RESMOOTH_CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest -p no:cacheprovider --confcutdir=tests/browser tests/browser

# searchindex.js is rewritten by every build (index.html is not). The reader's test reads the book
# built from the chapters' stored outputs, those that nbval has just compared with a fresh
# execution (`make book` executes every chapter once more; the test need not wait for it).
STORED_CONFIG := _build/stored-outputs.yml

_build/html/searchindex.js: $(STAMP) $(BOOK_INPUTS)
	mkdir -p _build
	sed 's/^  execute_notebooks: force$$/  execute_notebooks: "off"/' _config.yml > $(STORED_CONFIG)
	grep -q '^  execute_notebooks: "off"$$' $(STORED_CONFIG)
	$(BIN)/jupyter-book build . --config $(STORED_CONFIG) --warningiserror --all
	touch $@

$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "$@ is missing and there is no apt-get: install Chromium, or make CHROMIUM=/path/to/it" >&2; exit 1; }
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium

# Executes every chapter (a failing cell fails the build) and builds the HTML into _build/html.
book: $(STAMP)
	$(BIN)/jupyter-book build . --warningiserror --all
	@echo "The book is at $(abspath _build/html/index.html)"

# Re-executes the chapters in place, so that the outputs nbval compares against are current.
# (nbclient's `jupyter execute`: nbconvert is not among the dependencies.) The second line drops
# the per-cell execution timestamps nbclient records, and joins a print's pieces into one output.
notebooks: $(STAMP)
	$(BIN)/jupyter execute --inplace --timeout=600 book/*.ipynb
	$(BIN)/python scripts/tidy_notebooks.py book/*.ipynb

benchmark: $(STAMP)
	$(BIN)/python benchmarks/loss_overhead.py

clean:
	rm -rf _build
