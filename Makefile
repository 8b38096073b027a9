# Every target creates .venv on first use. torch==2.13.0 is pinned so pip takes the
# CPU wheel that lies on this machine and never a multi-gigabyte CUDA build.
PY      := .venv/bin/python
PIP     := .venv/bin/pip
STAMP   := .venv/.installed

.PHONY: test demo lint smoke bench-solver bench-reasoning clean

$(STAMP): pyproject.toml
	python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# Generate 6x6 Sudoku, train reasoner-cpu for 10 minutes, evaluate 1000 held-out puzzles.
demo: $(STAMP)
	.venv/bin/attractor demo

# Train attractor-cpu on the pydoc topics (about 2 minutes) and check validation loss falls.
smoke: $(STAMP)
	rm -rf runs/lm-smoke
	.venv/bin/attractor train configs/lm-smoke.yaml --set train.progress=false
	$(PY) -c "import csv, sys; v = [float(r['val_loss']) for r in csv.DictReader(open('runs/lm-smoke/metrics.csv')) if r['val_loss']]; print('validation loss', v[0], '->', v[-1]); sys.exit(0 if v[-1] < v[0] else 1)"

lint: $(STAMP)
	.venv/bin/ruff check attractor tests benchmarks
	.venv/bin/ruff format --check attractor tests benchmarks

bench-solver: $(STAMP)
	$(PIP) install -q torchdeq==0.1.0
	$(PY) benchmarks/solver_vs_torchdeq.py --repeats 7

# Reasoner vs TRM vs Transformer vs bidirectional attractor, equal parameters and wall clock.
bench-reasoning: $(STAMP)
	$(PY) benchmarks/reasoning_cpu.py

clean:
	rm -rf .venv build *.egg-info
