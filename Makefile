# The two commands of the README:
#   make run    install everything, start instance 0 with a parrot service, list it
#   make test   install everything, lint, run the test suite (all but the slow tests)
#   make test-slow   the slow ones: the cron minute, the 10,000-cycle soak
#   make test-fallback   the suite again with the spawn path kept for older kernels
#   make install    supervisor for the whole machine: PREFIX=/usr/local, DESTDIR for a
#                   package's staging tree
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: develop install run test test-slow test-fallback lint clean install-units uninstall \
	uninstall-units

$(STAMP): pyproject.toml setup.py native/build_native.py native/native.h native/spawn.c \
		scripts/bootstrap
	./scripts/bootstrap
	touch $@

develop: $(STAMP)

run: develop
	$(BIN)/supervisor init -i 0
	$(BIN)/supervisor service-status parrot -i 0 >/dev/null 2>&1 || \
	    $(BIN)/supervisor create-service -i 0 -n parrot -r 3 \
	        toy_services/parrot_service /tmp/parrot.log 1
	$(BIN)/supervisor list-supervisor -i 0

lint: develop
	$(BIN)/ruff check .

test: lint
	$(BIN)/pytest -m "not slow"

test-slow: develop
	$(BIN)/pytest -m slow

# The same suite with services spawned the way kept for kernels without clone3's
# CLONE_INTO_CGROUP (posix_spawn, the daemon stepping into each cgroup): CI runs both.
test-fallback: develop
	SUPERVISOR_SPAWN=fallback $(BIN)/pytest -m "not slow"

# The machine's install: a venv of its own in $(PREFIX)/lib/supervisor (the package and
# its dependencies, compiled here), the two commands linked into $(PREFIX)/bin, the man
# page made from the usage text, bash and zsh completion. With DESTDIR (a package's
# staging tree) the venv's paths name the final place, not the staging one.
PREFIX ?= /usr/local
DESTDIR ?=
PYTHON ?= python3
LIBDIR := $(PREFIX)/lib/supervisor
install:
	rm -rf $(DESTDIR)$(LIBDIR)
	$(PYTHON) -m venv $(DESTDIR)$(LIBDIR)
	$(DESTDIR)$(LIBDIR)/bin/python -m pip install -q --upgrade pip
	$(DESTDIR)$(LIBDIR)/bin/python -m pip install -q .
	if [ -n "$(DESTDIR)" ]; then \
	    grep -rlI -- '$(DESTDIR)$(LIBDIR)' $(DESTDIR)$(LIBDIR)/bin $(DESTDIR)$(LIBDIR)/pyvenv.cfg \
	        | xargs -r sed -i 's|$(DESTDIR)$(LIBDIR)|$(LIBDIR)|g'; \
	fi
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1 \
	    $(DESTDIR)$(PREFIX)/share/bash-completion/completions \
	    $(DESTDIR)$(PREFIX)/share/zsh/site-functions
	ln -sf $(LIBDIR)/bin/supervisor $(DESTDIR)$(PREFIX)/bin/supervisor
	ln -sf $(LIBDIR)/bin/supervisor-daemon $(DESTDIR)$(PREFIX)/bin/supervisor-daemon
	$(DESTDIR)$(LIBDIR)/bin/python -m supervisor.manpage \
	    > $(DESTDIR)$(PREFIX)/share/man/man1/supervisor.1
	install -m 644 completion/supervisor.bash \
	    $(DESTDIR)$(PREFIX)/share/bash-completion/completions/supervisor
	install -m 644 completion/_supervisor $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_supervisor

# the units go too (install-units'), never left behind naming commands that are gone
uninstall: uninstall-units
	rm -rf $(DESTDIR)$(LIBDIR)
	rm -f $(DESTDIR)$(PREFIX)/bin/supervisor $(DESTDIR)$(PREFIX)/bin/supervisor-daemon \
	    $(DESTDIR)$(PREFIX)/share/man/man1/supervisor.1 \
	    $(DESTDIR)$(PREFIX)/share/bash-completion/completions/supervisor \
	    $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_supervisor

# systemd units for the daemon that `make install` put in $(PREFIX)/bin (never this
# checkout): the system template units, the user ones (systemctl --user), and the generator
# that starts at boot each instance with a config file. systemctl daemon-reload only where
# systemd runs and nothing is staged.
#   make install && make install-units && systemctl enable --now supervisor@3.socket
UNITDIR ?= /etc/systemd/system
USERUNITDIR ?= /etc/systemd/user
GENERATORDIR ?= /etc/systemd/system-generators
install-units:
	install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(USERUNITDIR) $(DESTDIR)$(GENERATORDIR)
	sed 's|@BINDIR@|$(PREFIX)/bin|' systemd/supervisor@.service \
	    > $(DESTDIR)$(UNITDIR)/supervisor@.service
	install -m 644 systemd/supervisor@.socket $(DESTDIR)$(UNITDIR)/supervisor@.socket
	sed 's|@BINDIR@|$(PREFIX)/bin|' systemd/user/supervisor@.service \
	    > $(DESTDIR)$(USERUNITDIR)/supervisor@.service
	install -m 644 systemd/user/supervisor@.socket $(DESTDIR)$(USERUNITDIR)/supervisor@.socket
	sed 's|@UNITDIR@|$(UNITDIR)|' systemd/supervisor-generator \
	    > $(DESTDIR)$(GENERATORDIR)/supervisor-generator
	chmod 755 $(DESTDIR)$(GENERATORDIR)/supervisor-generator
	if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi

uninstall-units:
	rm -f $(DESTDIR)$(UNITDIR)/supervisor@.service $(DESTDIR)$(UNITDIR)/supervisor@.socket \
	    $(DESTDIR)$(USERUNITDIR)/supervisor@.service \
	    $(DESTDIR)$(USERUNITDIR)/supervisor@.socket \
	    $(DESTDIR)$(GENERATORDIR)/supervisor-generator
	if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi

# Coverage-guided fuzzing of the protocol and the daemon's request path (fuzz/README.md):
# a bounded run that prints how many inputs it tried and every kind of finding; it fails
# when there is one. FUZZ_SECONDS=600 make fuzz for a longer run.
FUZZ_SECONDS ?= 60
.PHONY: fuzz
fuzz: develop
	$(BIN)/python -c 'import atheris' 2>/dev/null || $(BIN)/python -m pip install -q atheris
	FUZZ_KEEP_GOING=1 $(BIN)/python fuzz/fuzz_protocol.py -max_total_time=$(FUZZ_SECONDS) \
	    -print_final_stats=1 2>&1 | grep -v -E '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse)' \
	    | tee $(VENV)/fuzz.log
	! grep -q -E '^  FINDING|ERROR: libFuzzer' $(VENV)/fuzz.log

clean:
	rm -rf $(VENV) build *.egg-info supervisor/_native.* .pytest_cache .ruff_cache

# Benchmarks against supervisord and circus (docs/benchmarks.md; bench/run.py --help).
# The peers and matplotlib go into their own venv, built from the same interpreter as ours.
PEERS_STAMP := bench/.peers/venv/.installed
$(PEERS_STAMP): bench/requirements-peers.txt | $(STAMP)
	$(BIN)/python -m venv bench/.peers/venv
	bench/.peers/venv/bin/python -m pip install -q --upgrade pip
	bench/.peers/venv/bin/python -m pip install -q -r bench/requirements-peers.txt
	touch $@

.PHONY: bench bench-smoke
bench: develop $(PEERS_STAMP)
	@command -v hyperfine >/dev/null 2>&1 || { [ "$$(id -u)" -eq 0 ] && \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hyperfine \
	    >/dev/null; } || echo "bench: no hyperfine, the harness times the CLI itself"
	$(BIN)/python -m compileall -q supervisor  # edited since the install: timed compiled
	$(BIN)/python bench/run.py --out docs/benchmarks.md

bench-smoke: develop $(PEERS_STAMP)
	$(BIN)/python bench/run.py --smoke --out bench/results/smoke.md
