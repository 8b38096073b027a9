"""Sudoku data: solver, generator, CSV, augmentation and tokens, checked by independent code."""

import numpy as np
import pytest

from attractor.data import sudoku as sd
from attractor.data import sudoku_generate as gen

S4, S6, S9 = sd.SudokuShape(2, 2), sd.SudokuShape(2, 3), sd.SudokuShape(3, 3)

# Classic 9x9 puzzles: the first from Wikipedia's Sudoku article, the second Arto Inkala's
# "world's hardest", the third a 17-clue puzzle.
CLASSIC_9 = [
    "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79",
    "8..........36......7..9.2...5...7.......457.....1...3...1....68..85...1..9....4..",
    "...8.1..........435............7.8........1...2..3....6......75..34........2..6..",
]
PUZZLE_4 = "1...|..3.|.4..|...2".replace("|", "")
PUZZLE_6 = "..3.5.|5..6..|...2..|.6...1|..1...|.4.3.."
PUZZLE_6 = PUZZLE_6.replace("|", "")


# ---------------------------------------------------------------- independent reference code


def box_dims(n):
    return {4: (2, 2), 6: (2, 3), 9: (3, 3)}[n]


def rules_ok(solution, puzzle):
    """Checker written here: every row, column and box is 1..N once, givens kept."""
    sol = np.asarray(solution).reshape(-1)
    n = int(round(len(sol) ** 0.5))
    br, bc = box_dims(n)
    g = sol.reshape(n, n)
    want = set(range(1, n + 1))
    for i in range(n):
        if set(g[i, :].tolist()) != want or set(g[:, i].tolist()) != want:
            return False
    for r0 in range(0, n, br):
        for c0 in range(0, n, bc):
            if set(g[r0 : r0 + br, c0 : c0 + bc].reshape(-1).tolist()) != want:
                return False
    p = np.asarray(puzzle).reshape(-1)
    return all(p[i] == 0 or p[i] == sol[i] for i in range(len(p)))


def brute_count(puzzle, limit=2):
    """Plain exhaustive search: first empty cell row-major, digits descending, no propagation."""
    g = [int(x) for x in np.asarray(puzzle).reshape(-1)]
    n = int(round(len(g) ** 0.5))
    br, bc = box_dims(n)
    count = 0

    def ok(cell, d):
        r, c = divmod(cell, n)
        for k in range(n):
            if g[r * n + k] == d or g[k * n + c] == d:
                return False
        r0, c0 = r - r % br, c - c % bc
        for i in range(br):
            for j in range(bc):
                if g[(r0 + i) * n + c0 + j] == d:
                    return False
        return True

    def rec():
        nonlocal count
        try:
            cell = g.index(0)
        except ValueError:
            count += 1
            return
        for d in range(n, 0, -1):
            if ok(cell, d):
                g[cell] = d
                rec()
                g[cell] = 0
                if count >= limit:
                    return

    rec()
    return count


def units_of(n):
    """Rows, columns and boxes as lists of cell indices."""
    br, bc = box_dims(n)
    rows = [[r * n + c for c in range(n)] for r in range(n)]
    cols = [[r * n + c for r in range(n)] for c in range(n)]
    boxes = [
        [(r0 + i) * n + c0 + j for i in range(br) for j in range(bc)]
        for r0 in range(0, n, br)
        for c0 in range(0, n, bc)
    ]
    return rows + cols + boxes


def singles(cands, units):
    """Naked and hidden singles on candidate sets, rescanning everything until nothing
    changes; False at a contradiction (a cell without candidates, or a digit without a place
    in some unit)."""
    n = len(units[0])
    changed = True
    while changed:
        changed = False
        for unit in units:
            for cell in unit:
                if len(cands[cell]) == 1:
                    for other in unit:
                        if other != cell and cands[cell] <= cands[other]:
                            cands[other] = cands[other] - cands[cell]
                            changed = True
            if any(not cands[cell] for cell in unit):
                return False
            for digit in range(1, n + 1):
                places = [cell for cell in unit if digit in cands[cell]]
                if not places:
                    return False
                if len(places) == 1 and len(cands[places[0]]) > 1:
                    cands[places[0]] = {digit}
                    changed = True
    return True


def reference_rating(puzzle, limit=2):
    """The documented search, written plainly: propagate singles to a fixpoint, branch on
    the first open cell (row-major) with the fewest candidates, digits ascending, stop after
    `limit` solutions; a backtrack is a branch whose propagation hits a contradiction.
    Returns (solutions, backtracks)."""
    g = [int(x) for x in np.asarray(puzzle).reshape(-1)]
    n = int(round(len(g) ** 0.5))
    units = units_of(n)
    found, backtracks = [], 0

    def search(cands):
        nonlocal backtracks
        open_cells = [c for c in range(len(cands)) if len(cands[c]) > 1]
        if not open_cells:
            found.append([min(c) for c in cands])
            return
        best = min(open_cells, key=lambda c: (len(cands[c]), c))
        for digit in sorted(cands[best]):
            branch = [set(c) for c in cands]
            branch[best] = {digit}
            if singles(branch, units):
                search(branch)
                if len(found) >= limit:
                    return
            else:
                backtracks += 1

    start = [{d} if d else set(range(1, n + 1)) for d in g]
    if singles(start, units):
        search(start)
    return found, backtracks


# ---------------------------------------------------------------- geometry and parsing


def test_shapes_and_peers():
    assert sd.shape_for_length(16) == S4
    assert sd.shape_for_length(36) == S6
    assert sd.shape_for_length(81) == S9
    with pytest.raises(ValueError, match="expected 16, 36 or 81 cells, got 80"):
        sd.shape_for_length(80)
    for shape in (S4, S6, S9):
        n = shape.n
        assert shape.cells == n * n
        assert len(shape.units) == 3 * n
        # peers: 2(n-1) row/column mates plus the box mates not already counted
        expect = 2 * (n - 1) + (n - shape.box_rows - shape.box_cols + 1)
        assert all(len(p) == expect for p in shape.peers)
    # r1c1 in 6x6 (2 rows x 3 cols boxes): box mates are r1c2, r1c3, r2c1..r2c3
    assert set(S6.peers[0]) >= {1, 2, 6, 7, 8} and 9 not in S6.peers[0]


def test_parse_format_roundtrip():
    g = sd.parse_grid(CLASSIC_9[0])
    assert g.dtype == np.int8 and g.shape == (81,)
    assert sd.format_grid(g) == CLASSIC_9[0]
    assert np.array_equal(sd.parse_grid(CLASSIC_9[0].replace(".", "0")), g)
    assert sd.format_grid(sd.parse_grid(PUZZLE_6)) == PUZZLE_6
    text = sd.pretty(sd.parse_grid(PUZZLE_6))
    assert len(text.splitlines()) == 6 + 2 and "|" in text


def test_parse_errors():
    with pytest.raises(ValueError, match=r"^sudoku: expected 16, 36 or 81 cells, got 80$"):
        sd.parse_grid(CLASSIC_9[0][:80])
    with pytest.raises(ValueError, match=r"expected 81 cells, got 36"):
        sd.parse_grid(PUZZLE_6, S9)
    with pytest.raises(ValueError, match=r"bad character 'x' at position 3"):
        sd.parse_grid("53x" + CLASSIC_9[0][3:])
    with pytest.raises(ValueError, match=r"bad character '5' at position 1"):
        sd.parse_grid("5" + PUZZLE_4[1:])
    bad = "55" + CLASSIC_9[0][2:]
    with pytest.raises(ValueError, match=r"conflicting givens: r1c1 and r1c2 are both 5"):
        sd.parse_grid(bad)


# ---------------------------------------------------------------- solver


@pytest.mark.parametrize("text", CLASSIC_9 + [PUZZLE_4, PUZZLE_6])
def test_solver_known_puzzles_and_their_ratings(text):
    puzzle = sd.parse_grid(text)
    result = sd.solve(puzzle)
    assert result.count == 1
    assert rules_ok(result.solutions[0], puzzle)
    assert sd.is_solution(result.solutions[0], puzzle)
    solutions, backtracks = reference_rating(puzzle)
    assert [list(s) for s in result.solutions] == solutions
    assert result.backtracks == backtracks == sd.rate(puzzle)


def test_ratings_of_hand_picked_puzzles():
    """Wikipedia's example falls to singles alone (rating 0, the propagated grid is the
    solution); Inkala's puzzle needs guesses that fail; the reference search agrees on
    each, and on the 17-clue puzzle."""
    easy, hard, seventeen = (sd.parse_grid(t) for t in CLASSIC_9)
    assert sd.rate(easy) == 0 == reference_rating(easy)[1]
    assert np.count_nonzero(sd.propagated(easy)) == 81
    assert rules_ok(sd.propagated(easy), easy)
    assert sd.rate(hard) > 0 and sd.rate(hard) == reference_rating(hard)[1]
    assert sd.rate(seventeen) == reference_rating(seventeen)[1]
    assert np.count_nonzero(sd.propagated(hard)) < 81  # singles alone do not solve it


def test_solver_rating_and_two_solutions():
    assert sd.solve(sd.parse_grid(CLASSIC_9[0])).backtracks == 0  # singles suffice
    assert sd.solve(sd.parse_grid(CLASSIC_9[1])).backtracks > 0  # needs guessing
    # remove the two 1s and two 2s of a deadly rectangle: exactly two solutions
    sol = sd.solve(sd.parse_grid(PUZZLE_4)).solutions[0].reshape(4, 4)
    found = None
    for r1 in range(4):
        for r2 in range(r1 + 1, 4):
            for c1 in range(4):
                for c2 in range(c1 + 1, 4):
                    a, b = sol[r1, c1], sol[r1, c2]
                    if (
                        sol[r2, c1] == b
                        and sol[r2, c2] == a
                        and (r1 // 2 == r2 // 2) != (c1 // 2 == c2 // 2)
                    ):
                        found = (r1, r2, c1, c2)
    assert found is not None
    r1, r2, c1, c2 = found
    holed = sol.copy()
    holed[[r1, r1, r2, r2], [c1, c2, c1, c2]] = 0
    holed = holed.reshape(-1)
    res = sd.solve(holed, limit=10)
    assert res.count == 2 == brute_count(holed, limit=10)
    assert all(rules_ok(s, holed) for s in res.solutions)
    assert sd.solve(holed, limit=1).count == 1


def test_solver_no_solution():
    # no conflicting givens, but the 3 in r2c3 leaves row 1 no place for a 3
    bad = sd.parse_grid("12....3.........")
    assert sd.solve(bad, limit=5).count == 0 == brute_count(bad, limit=5)
    conflict = np.zeros(16, dtype=np.int8)
    conflict[[0, 1]] = 1
    assert sd.solve(conflict).count == 0


# ---------------------------------------------------------------- generator


@pytest.mark.parametrize("shape", [S4, S6])
def test_generator_unique_by_brute_force(shape):
    out = gen.generate_many(8, shape, seed=1, minimal=True)
    for puzzle, solution, rating in out:
        assert brute_count(puzzle) == 1
        assert rules_ok(solution, puzzle)
        assert rating == sd.solve(puzzle).backtracks == reference_rating(puzzle)[1]
        assert np.count_nonzero(puzzle) < shape.cells


def test_generator_9x9_band_and_uniqueness():
    out = gen.generate_many(3, S9, seed=2, min_backtracks=1, max_backtracks=50, max_givens=27)
    for puzzle, solution, rating in out:
        assert 1 <= rating <= 50
        assert rating == reference_rating(puzzle)[1]
        assert np.count_nonzero(puzzle) <= 27
        assert rules_ok(solution, puzzle)
        assert brute_count(puzzle) == 1


def test_generator_reproducible_and_worker_independent():
    a = gen.generate_many(6, S6, seed=7)
    b = gen.generate_many(6, S6, seed=7, workers=2)
    c = gen.generate_many(6, S6, seed=8)
    for (pa, sa, ra), (pb, sb, rb) in zip(a, b, strict=True):
        assert np.array_equal(pa, pb) and np.array_equal(sa, sb) and ra == rb
    assert any(not np.array_equal(x[0], y[0]) for x, y in zip(a, c, strict=True))


@pytest.mark.parametrize("shape,count", [(S4, 3), (S6, 3), (S9, 1)])
def test_generator_minimal(shape, count):
    for puzzle, _, _ in gen.generate_many(count, shape, seed=3, minimal=True):
        for cell in np.flatnonzero(puzzle):
            weaker = puzzle.copy()
            weaker[cell] = 0
            assert sd.solve(weaker).count == 2
            if shape.n < 9:
                assert brute_count(weaker) == 2


def test_generator_non_minimal_stops_early():
    puzzle, solution, _ = gen.generate(S9, np.random.default_rng(0), max_givens=40)
    assert 36 <= np.count_nonzero(puzzle) <= 40  # stops at the first puzzle in the band
    assert sd.solve(puzzle).count == 1 and rules_ok(solution, puzzle)


def test_generator_impossible_band():
    with pytest.raises(RuntimeError, match="widen the band"):
        gen.generate(S4, 0, max_givens=1, max_tries=3)


# ---------------------------------------------------------------- augmentation


@pytest.mark.parametrize("shape", [S4, S6, S9])
def test_augment_keeps_validity(shape):
    rng = np.random.default_rng(0)
    puzzle, solution, _ = gen.generate(shape, rng)
    seen = set()
    for _ in range(20):
        p, s = gen.augment(puzzle, solution, rng)
        assert rules_ok(s, p)
        assert np.count_nonzero(p) == np.count_nonzero(puzzle)
        assert (p[p != 0] == s[p != 0]).all()  # givens equal the solution
        assert sd.solve(p).count == 1  # uniqueness is preserved by a symmetry
        seen.add(sd.format_grid(s))
    assert len(seen) > 10
    # 2-D input keeps its shape
    p2, s2 = gen.augment(puzzle.reshape(shape.n, shape.n), solution.reshape(shape.n, shape.n), rng)
    assert p2.shape == (shape.n, shape.n) and rules_ok(s2, p2)


def test_augment_transposes_only_square_boxes():
    rng = np.random.default_rng(0)
    puzzle, solution, _ = gen.generate(S6, rng)
    for _ in range(30):
        _, s = gen.augment(puzzle, solution, rng)
        g = s.reshape(6, 6)
        # rows within a band of 2 always share a box pair: first 3 cells of rows 0,1 form a box
        assert set(g[0:2, 0:3].reshape(-1).tolist()) == set(range(1, 7))


# ---------------------------------------------------------------- CSV and tokens


def test_csv_roundtrip(tmp_path):
    out = gen.generate_many(4, S9, seed=5)
    puzzles = [sd.Puzzle(f"gen{i}", p, s, r) for i, (p, s, r) in enumerate(out)]
    path = tmp_path / "sub" / "train.csv"
    sd.write_csv(path, puzzles)
    lines = path.read_text().splitlines()
    assert lines[0] == "source,question,answer,rating"
    assert len(lines[1].split(",")[1]) == 81 and "." in lines[1].split(",")[1]
    back = sd.read_csv(path)
    assert len(back) == 4
    for a, b in zip(puzzles, back, strict=True):
        assert a.source == b.source and a.rating == b.rating
        assert np.array_equal(a.question, b.question) and np.array_equal(a.answer, b.answer)
    assert [f.name for f in path.parent.iterdir()] == ["train.csv"]  # no temp file left


def test_csv_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        sd.read_csv(tmp_path / "missing.csv")
    p = tmp_path / "nocol.csv"
    p.write_text("source,question,answer\nx,1,2\n")
    with pytest.raises(ValueError, match="lacks column.*rating"):
        sd.read_csv(p)
    puzzle = sd.parse_grid(CLASSIC_9[0])
    answer = sd.format_grid(sd.solve(puzzle).solutions[0])
    p = tmp_path / "bad.csv"
    p.write_text(
        "source,question,answer,rating\n"
        f"a,{CLASSIC_9[0]},{answer},0\n"
        f"b,{CLASSIC_9[0][:80]},{answer},0\n"
    )
    with pytest.raises(ValueError, match=r"line 3: expected 16, 36 or 81 cells, got 80"):
        sd.read_csv(p)
    wrong = answer[1] + answer[0] + answer[2:]
    p.write_text(f"source,question,answer,rating\na,{CLASSIC_9[0]},{wrong},0\n")
    with pytest.raises(ValueError, match=r"line 2: "):
        sd.read_csv(p)


def test_tokens_roundtrip():
    g = sd.parse_grid(CLASSIC_9[0])
    t = sd.to_tokens(g)
    assert t.min() >= 1 and t.max() <= 10
    assert (t[g == 0] == 1).all() and (t[g == 5] == 6).all()
    assert np.array_equal(sd.from_tokens(t), g)
    with pytest.raises(ValueError, match="pad token"):
        sd.from_tokens(np.array([0, 2, 3]))


def test_solver_matches_brute_force_on_random_grids():
    """Counts (up to 3) and solutions agree with the plain search on random, often broken grids."""
    rng = np.random.default_rng(11)
    cases = []
    for _ in range(150):  # 4x4: random non-conflicting givens, many unsolvable
        g = np.zeros(16, dtype=np.int8)
        for cell in rng.choice(16, size=int(rng.integers(3, 8)), replace=False):
            g[cell] = rng.integers(1, 5)
            if sd.find_conflict(g) is not None:
                g[cell] = 0
        cases.append(g)
    for _ in range(40):  # 6x6: a solution with holes, sometimes one given changed
        g = gen.random_solution(S6, rng)
        g[rng.random(36) < 0.6] = 0
        if rng.random() < 0.5:
            cell = rng.choice(np.flatnonzero(g))
            g[cell] = g[cell] % 6 + 1
            if sd.find_conflict(g) is not None:
                continue
        cases.append(g)
    kinds = set()
    for g in cases:
        res = sd.solve(g, limit=3)
        assert res.count == brute_count(g, limit=3)
        assert res.backtracks == reference_rating(g, limit=3)[1]
        assert all(rules_ok(s, g) for s in res.solutions)
        kinds.add(res.count)
    assert kinds == {0, 1, 2, 3}
