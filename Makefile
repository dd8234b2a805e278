# linewarden — every install step lives here so a fresh clone works.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# The data plane compiled with mypyc (setup.py lists the modules): rebuilt when any source
# changes, since compiled modules shadow their .py files in the editable install.
COMPILED := $(VENV)/.compiled
SOURCES := $(shell find src/linewarden -name '*.py') setup.py
PURE    := build/pure
DEBS    := curl wrk nginx-light chromium freeradius-utils redis-server postgresql haproxy prometheus nftables
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test test-pure lint bench bench-scan bench-peers soak fuzz debs venv pure clean

# First everything pure (the dependencies, mypy among them); then the compiled build, which
# mypyc type-checks against those dependencies (hence no build isolation).
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q wheel==0.48.0
	LINEWARDEN_PURE=1 $(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

$(COMPILED): $(STAMP) $(SOURCES)
	$(BIN)/pip install -q --no-build-isolation --no-deps -e .
	$(BIN)/python -c "import linewarden.decide as d; assert d.__file__.endswith('.so'), d.__file__"
	touch $(COMPILED)

venv: $(COMPILED)

# Back to pure Python in place (no compiled module shadows a source while you edit).
pure: $(STAMP)
	find src -name '*.so' -delete
	rm -f $(COMPILED)

# Debian packages the suite drives for real (curl as the client, nginx as origin, wrk for load;
# haproxy in front with PROXY protocol, promtool from prometheus, nft for the interception lab).
debs:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $$missing; \
	fi

run: $(COMPILED)
	$(BIN)/linewarden serve $(if $(CONFIG),--config $(CONFIG),)

# The whole suite on the compiled build, then the core and gateway tests on the pure sources
# (a copy without the .so files, first on PYTHONPATH, inherited by the gateways they start).
test: $(COMPILED) debs
	LINEWARDEN_EXPECT=compiled $(BIN)/pytest -q
	$(MAKE) test-pure

test-pure: $(STAMP)
	rm -rf $(PURE) && mkdir -p $(PURE) && cp -r src/linewarden $(PURE)/
	find $(PURE) \( -name '*.so' -o -name __pycache__ \) -prune -exec rm -rf {} +
	LINEWARDEN_EXPECT=pure PYTHONPATH=$(CURDIR)/$(PURE) $(BIN)/pytest -q -p no:cacheprovider tests/core tests/gateway

lint: $(STAMP)
	$(BIN)/ruff check src tests bench fuzz
	$(BIN)/mypy

bench: $(COMPILED) debs
	$(BIN)/python bench/proxy.py
	$(BIN)/python bench/hotpath.py
	$(BIN)/python bench/claims.py
	$(BIN)/python bench/ledger.py
	$(BIN)/python bench/ledger_batch.py
	$(BIN)/python bench/radius.py

# Long runs, outside `make test` (short variants of each are in the suite).
soak: $(COMPILED) debs
	$(BIN)/python bench/soak.py --minutes $(or $(MINUTES),10)

fuzz: $(STAMP)
	$(BIN)/python fuzz/run.py --seconds $(or $(SECONDS),60)

bench-peers: $(COMPILED)
	$(BIN)/python bench/peers/run.py $(ARGS)

bench-scan: $(STAMP)
	$(BIN)/python bench/scan.py

clean:
	rm -rf $(VENV) .linewarden .pytest_cache .mypy_cache .ruff_cache
