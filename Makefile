# SightSound: `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
FLASK := $(VENV)/bin/flask --app study_app
HOST ?= 127.0.0.1
PORT ?= 5000
# torch must come first: a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH_PIN := torch==2.13.0
BASIC_PITCH_PIN := basic-pitch==0.4.0

.PHONY: demo serve test test-fast lint env env-all clean-demo browser nginx r-lme4 fluidsynth system-deps

$(VENV)/.app-installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.all-installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH_PIN)
	$(PIP) install --quiet -e '.[synthesis,analysis,dev]'
	# basic-pitch's transcription model, run with onnxruntime: --no-deps, since its own
	# requirements pull TensorFlow (see docs/analysis.md).
	$(PIP) install --quiet --no-deps $(BASIC_PITCH_PIN)
	touch $(VENV)/.app-installed $@

env: $(VENV)/.app-installed
env-all: $(VENV)/.all-installed

## demo: build the demo stimuli, set up SQLite in instance/, start the app, print the links.
demo: env
	$(FLASK) demo-setup --base-url http://$(HOST):$(PORT)
	$(FLASK) run --host $(HOST) --port $(PORT)

## serve: the production shape on this machine: nginx in front of SERVERS gunicorn app servers on
## DATABASE_URL (PostgreSQL), listening on PORT; migrations run once first. Ctrl-C stops it all.
## Media go through nginx (X-Accel-Redirect); SERVE_ARGS=--media-through-app has the app send them.
SERVERS ?= 2
SERVE_ARGS ?=
serve: env nginx
	$(PY) scripts/serve.py --servers $(SERVERS) --host $(HOST) --port $(PORT) $(SERVE_ARGS)

## test: the whole suite (SQLite and PostgreSQL, browser tests, R's mixed models, the docstrings'
## examples) in TEST_WORKERS processes (pytest-xdist). One worker is mostly waiting: the browser
## tests play clips in real time and the longest model test runs in R, so 3 suit 2 cores.
## A plain `pytest` runs the same tests in one process.
TEST_WORKERS ?= 3
# Tests marked `serial` (load and restart durability: a server's timing under load) run alone
# after the parallel part: beside two other pytest workers a database restart once took longer
# than the server's retry waits.
test: env-all system-deps
	$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal -m "not serial"
	$(PY) -m pytest -m serial -q

## test-fast: no browser, no R, no model runs, no slow load tests, the database tests on SQLite
## only: needs neither Chromium, R nor a PostgreSQL server. `make test` runs all of it.
test-fast: env-all
	SIGHTSOUND_TEST_DATABASES=sqlite $(PY) -m pytest -m "not slow and not browser and not r and not model" -n $(TEST_WORKERS) --dist worksteal -q

system-deps: browser nginx r-lme4 fluidsynth

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_INSTALL := $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq

## browser: Debian's Chromium for the Playwright tests (Playwright cannot download one here).
browser:
	@test -x /usr/bin/chromium || { echo "installing chromium (Debian)"; \
	  $(APT_INSTALL) chromium >/dev/null; }

## nginx: Debian's nginx, for `make serve` and the two-server test (tests/app/test_nginx_shape.py).
nginx:
	@test -x /usr/sbin/nginx || { echo "installing nginx (Debian)"; \
	  $(APT_INSTALL) --no-install-recommends nginx >/dev/null; }

## r-lme4: R and lme4 from Debian, for the analysis's mixed models (CRAN is not reachable here).
R_PACKAGES := r-base-core r-cran-lme4 r-cran-lmertest r-cran-glmmtmb r-cran-jsonlite
r-lme4:
	@Rscript -e 'for (p in c("lme4", "lmerTest", "glmmTMB", "jsonlite")) library(p, character.only = TRUE)' \
	  >/dev/null 2>&1 || { echo "installing R and lme4 (Debian)"; \
	  $(APT_INSTALL) $(R_PACKAGES) >/dev/null; }

## fluidsynth: FluidSynth and its General MIDI SoundFont from Debian, for synthesis's score_render.
SOUNDFONT := /usr/share/sounds/sf2/FluidR3_GM.sf2
fluidsynth:
	@{ command -v fluidsynth >/dev/null 2>&1 && test -f $(SOUNDFONT); } || { \
	  echo "installing fluidsynth and fluid-soundfont-gm (Debian)"; \
	  $(APT_INSTALL) --no-install-recommends fluidsynth fluid-soundfont-gm >/dev/null; }

lint: env-all
	$(VENV)/bin/ruff check .

clean-demo:
	rm -rf stimuli/demo instance/sightsound.sqlite* instance/media
