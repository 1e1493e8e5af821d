# The two commands of the README:
#   make run    install everything, start instance 0 with a parrot service, list it
#   make test   install everything, lint, run the whole test suite
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint clean install-units

$(STAMP): pyproject.toml setup.py native/build_native.py native/native.h scripts/bootstrap
	./scripts/bootstrap
	touch $@

install: $(STAMP)

run: install
	$(BIN)/supervisor init -i 0
	$(BIN)/supervisor service-status parrot -i 0 >/dev/null 2>&1 || \
	    $(BIN)/supervisor create-service -i 0 -n parrot -r 3 \
	        toy_services/parrot_service /tmp/parrot.log 1
	$(BIN)/supervisor list-supervisor -i 0

lint: install
	$(BIN)/ruff check supervisor tests native

test: lint
	$(BIN)/pytest

# systemd template units, with ExecStart pointing at this checkout's venv:
#   make install-units && systemctl enable --now supervisor@3.socket
UNITDIR ?= /etc/systemd/system
install-units: install
	install -d $(UNITDIR)
	sed 's|@BINDIR@|$(abspath $(BIN))|' systemd/supervisor@.service > $(UNITDIR)/supervisor@.service
	install -m 644 systemd/supervisor@.socket $(UNITDIR)/supervisor@.socket
	-systemctl daemon-reload 2>/dev/null

clean:
	rm -rf $(VENV) build *.egg-info supervisor/_native.* .pytest_cache .ruff_cache
