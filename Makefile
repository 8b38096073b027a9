# Every target creates .venv on first use. torch==2.13.0 is pinned so pip takes the
# CPU wheel that lies on this machine and never a multi-gigabyte CUDA build.
PY      := .venv/bin/python
PIP     := .venv/bin/pip
STAMP   := .venv/.installed

.PHONY: test demo lint smoke install-check bench bench-quick bench-solver bench-reasoning clean

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
	.venv/bin/attractor train lm-smoke --set train.progress=false
	$(PY) -c "import csv, sys; v = [float(r['val_loss']) for r in csv.DictReader(open('runs/lm-smoke/metrics.csv')) if r['val_loss']]; print('validation loss', v[0], '->', v[-1]); sys.exit(0 if v[-1] < v[0] else 1)"

# The package outside the repository: a fresh venv, `pip install .`, then the command line from
# an empty directory (python -m attractor, the packaged configs, a one-minute demo).
install-check:
	rm -rf /tmp/attractor-install-check && mkdir -p /tmp/attractor-install-check/run
	python3 -m venv /tmp/attractor-install-check/venv
	/tmp/attractor-install-check/venv/bin/pip install -q torch==2.13.0
	/tmp/attractor-install-check/venv/bin/pip install -q .
	cd /tmp/attractor-install-check/run && ../venv/bin/python -m attractor --help > /dev/null
	cd /tmp/attractor-install-check/run && ../venv/bin/attractor demo --minutes 1
	cd /tmp/attractor-install-check/run && ../venv/bin/python $(CURDIR)/benchmarks/cli_startup.py \
		--repeats 10 --name cli_startup_install

lint: $(STAMP)
	.venv/bin/ruff check attractor tests benchmarks
	.venv/bin/ruff format --check attractor tests benchmarks

# Every claim of the paper re-measured at CPU scale (benchmarks/; 2 h 15 min on 2 cores when the
# reasoning proxies ran at 5 minutes on all three tasks, about 45 min more now that the maze
# proxy runs at 20; about 2 h more for the language models with the paper's recipe; and about
# 5 h more for the size series, lm_size_series.py, last): results in benchmarks/results/*.json
# with a PNG beside each.
bench: $(STAMP)
	$(PY) benchmarks/lm_pareto.py
	$(PY) benchmarks/internalization.py
	$(PY) benchmarks/lm_pareto.py --config lm-pydocs-cpu-reference --work runs/lm_pareto_reference \
		--name lm_pareto_reference
	$(PY) benchmarks/internalization.py --config lm-pydocs-cpu-reference \
		--runs runs/lm_pareto_reference --name internalization_reference
	$(PY) benchmarks/memory_vs_depth.py
	$(PY) benchmarks/ablations.py
	$(PY) benchmarks/throughput.py
	$(PY) benchmarks/reasoning_cpu.py --tasks sudoku6-cpu,sudoku9-cpu --minutes 5 \
		--name reasoning_cpu_bench
	$(PY) benchmarks/reasoning_cpu.py --tasks maze8-cpu --minutes 20 --name reasoning_cpu_maze8_bench
	$(PY) benchmarks/lm_size_series.py

# The same scripts with tiny budgets (a few minutes; CI runs it): *_quick results.
bench-quick: $(STAMP)
	$(PY) benchmarks/lm_pareto.py --tokens 16384 --batch 4 --evals 2 --eval-batches 2 \
		--work runs/lm_pareto_quick --name lm_pareto_quick
	$(PY) benchmarks/internalization.py --runs runs/lm_pareto_quick --deq-steps 5 \
		--eval-windows 8 --name internalization_quick
	$(PY) benchmarks/memory_vs_depth.py --depths 4,8 --seq-len 64 --name memory_vs_depth_quick
	$(PY) benchmarks/ablations.py --variants baseline,adjoint,concat --steps 4 --name ablations_quick
	$(PY) benchmarks/throughput.py --steps 4 --warmup 1 --name throughput_quick
	$(PY) benchmarks/reasoning_cpu.py --tasks sudoku6-cpu --minutes 0.5 --seeds 0,1 \
		--work runs/reasoning_cpu_quick --name reasoning_cpu_quick
	$(PY) benchmarks/lm_size_series.py --widths 64,96 --tokens-per-param 0.002 --batch 4 \
		--evals 1 --eval-batches 2 --work runs/lm_size_series_quick --name lm_size_series_quick
	$(PY) benchmarks/cli_startup.py --repeats 10 --name cli_startup_quick
	$(PY) benchmarks/gpu_check.py --device cpu --quick

bench-solver: $(STAMP)
	$(PIP) install -q torchdeq==0.1.0
	$(PY) benchmarks/solver_vs_torchdeq.py --repeats 7

# Both reasoner schemes vs TRM vs Transformer vs bidirectional attractor, equal parameters
# and wall clock.
bench-reasoning: $(STAMP)
	$(PY) benchmarks/reasoning_cpu.py

clean:
	rm -rf .venv build *.egg-info
