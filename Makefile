# The two commands a newcomer needs (see README.md): `make book` and `make test`.
# Each creates .venv when it is missing and installs the project into it.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# The datasets beside the checkout (read-only is fine); RESMOOTH_DATA overrides it.
export RESMOOTH_DATA ?= $(abspath ../shared/data)
export PYTHONHASHSEED := 0
export MPLBACKEND := Agg

.PHONY: install test unit nbval book notebooks benchmark clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,book]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

# Unit, property and end-to-end tests, then nbval over every chapter of the book.
test: unit nbval

unit: $(STAMP)
	$(BIN)/python -m pytest tests

nbval: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider --nbval --nbval-sanitize-with book/sanitize.cfg book

# Executes every chapter (a failing cell fails the build) and builds the HTML into _build/html.
book: $(STAMP)
	$(BIN)/jupyter-book build . --warningiserror --all
	@echo "The book is at $(abspath _build/html/index.html)"

# Re-executes the chapters in place, so that the outputs nbval compares against are current.
# (nbclient's `jupyter execute`: nbconvert is not among the dependencies.) The second line drops
# the per-cell execution timestamps nbclient records, which would change at every run.
notebooks: $(STAMP)
	$(BIN)/jupyter execute --inplace --timeout=600 book/*.ipynb
	$(BIN)/python -c 'import sys, nbformat; nbs = {p: nbformat.read(p, as_version=4) for p in sys.argv[1:]}; [c.metadata.pop("execution", None) for nb in nbs.values() for c in nb.cells]; [nbformat.write(nb, p) for p, nb in nbs.items()]' book/*.ipynb

benchmark: $(STAMP)
	$(BIN)/python benchmarks/loss_overhead.py

clean:
	rm -rf _build
