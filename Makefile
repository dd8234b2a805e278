# linewarden — every install step lives here so a fresh clone works.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DEBS    := curl wrk nginx-light chromium freeradius-utils redis-server postgresql haproxy prometheus nftables
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test lint bench bench-scan bench-peers soak fuzz debs venv clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Debian packages the suite drives for real (curl as the client, nginx as origin, wrk for load;
# haproxy in front with PROXY protocol, promtool from prometheus, nft for the interception lab).
debs:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $$missing; \
	fi

run: $(STAMP)
	$(BIN)/linewarden serve $(if $(CONFIG),--config $(CONFIG),)

test: $(STAMP) debs
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests bench fuzz
	$(BIN)/mypy

bench: $(STAMP) debs
	$(BIN)/python bench/proxy.py
	$(BIN)/python bench/hotpath.py
	$(BIN)/python bench/claims.py
	$(BIN)/python bench/ledger.py
	$(BIN)/python bench/ledger_batch.py
	$(BIN)/python bench/radius.py

# Long runs, outside `make test` (short variants of each are in the suite).
soak: $(STAMP) debs
	$(BIN)/python bench/soak.py --minutes $(or $(MINUTES),10)

fuzz: $(STAMP)
	$(BIN)/python fuzz/run.py --seconds $(or $(SECONDS),60)

bench-peers: $(STAMP)
	$(BIN)/python bench/peers/run.py $(ARGS)

bench-scan: $(STAMP)
	$(BIN)/python bench/scan.py

clean:
	rm -rf $(VENV) .linewarden .pytest_cache .mypy_cache .ruff_cache
