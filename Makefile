# Every target creates .venv on first use. torch==2.13.0 is pinned so pip takes the
# CPU wheel that lies on this machine and never a multi-gigabyte CUDA build.
PY      := .venv/bin/python
PIP     := .venv/bin/pip
STAMP   := .venv/.installed

.PHONY: test demo lint bench-solver clean

$(STAMP): pyproject.toml
	python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	.venv/bin/attractor demo

lint: $(STAMP)
	.venv/bin/ruff check attractor tests benchmarks
	.venv/bin/ruff format --check attractor tests benchmarks

bench-solver: $(STAMP)
	$(PIP) install -q torchdeq==0.1.0
	$(PY) benchmarks/solver_vs_torchdeq.py --repeats 7

clean:
	rm -rf .venv build *.egg-info
