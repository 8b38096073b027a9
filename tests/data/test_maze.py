"""Maze data: generated answers are checked against an independent Dijkstra written here."""

import heapq

import numpy as np
import pytest

from attractor.data import maze as M


def dijkstra(grid: np.ndarray, source: tuple[int, int]) -> dict[tuple[int, int], int]:
    """Distances from source over non-wall cells, by Dijkstra with a heap (unit weights)."""
    n_rows, n_cols = grid.shape
    dist = {source: 0}
    heap = [(0, source)]
    while heap:
        d, (r, c) = heapq.heappop(heap)
        if d > dist[(r, c)]:
            continue
        for rr, cc in ((r, c + 1), (r + 1, c), (r, c - 1), (r - 1, c)):
            inside = 0 <= rr < n_rows and 0 <= cc < n_cols
            if inside and grid[rr, cc] != "#" and d + 1 < dist.get((rr, cc), 1 << 30):
                dist[(rr, cc)] = d + 1
                heapq.heappush(heap, (d + 1, (rr, cc)))
    return dist


def cell_of(grid: np.ndarray, mark: str) -> tuple[int, int]:
    where = np.argwhere(grid == mark)
    assert len(where) == 1, f"expected one {mark!r}, found {len(where)}"
    return int(where[0, 0]), int(where[0, 1])


def trace_answer(answer: np.ndarray) -> list[tuple[int, int]]:
    """Follow the 'o' cells from S to G; each cell must continue to exactly one new cell."""
    start, goal = cell_of(answer, "S"), cell_of(answer, "G")
    path, seen = [start], {start}
    while path[-1] != goal:
        r, c = path[-1]
        nxt = [
            (rr, cc)
            for rr, cc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1))
            if 0 <= rr < answer.shape[0]
            and 0 <= cc < answer.shape[1]
            and answer[rr, cc] in "oG"
            and (rr, cc) not in seen
        ]
        assert len(nxt) >= 1, f"path breaks off at {(r, c)}"
        step = goal if goal in nxt else nxt[0]
        assert goal in nxt or len(nxt) == 1, f"path forks at {(r, c)}"
        path.append(step)
        seen.add(step)
    return path


def check_shortest_answer(question: np.ndarray, answer: np.ndarray) -> int:
    """Assert the answer marks the one shortest S -> G path of the question; return its moves."""
    assert set(np.unique(question)) <= set("# SG") and (question == "S").sum() == 1
    assert ((answer == "o") == ((question == " ") & (answer != " "))).all()
    assert (np.where(answer == "o", " ", answer) == question).all()
    path = trace_answer(answer)
    for (r0, c0), (r1, c1) in zip(path, path[1:], strict=False):
        assert abs(r0 - r1) + abs(c0 - c1) == 1
        assert question[r1, c1] != "#"
    assert len(path) - 2 == (answer == "o").sum()
    start, goal = path[0], path[-1]
    from_s, from_g = dijkstra(question, start), dijkstra(question, goal)
    length = from_s[goal]
    assert len(path) - 1 == length, "the answer is not a shortest path"
    # Unique: the cells on some shortest path (d_S + d_G == D) are exactly the answer's cells.
    on_shortest = {cell for cell, d in from_s.items() if d + from_g.get(cell, 1 << 30) == length}
    assert on_shortest == set(path)
    return length


@pytest.mark.parametrize("size,count", [(8, 40), (9, 30), (12, 40), (13, 20), (30, 12)])
def test_generated_answers_are_unique_shortest_paths(size, count):
    mazes = M.generate_many(count, size, seed=size)
    threshold = M.hard_threshold(size)
    for m in mazes:
        assert m.question.shape == (size, size) and m.answer.shape == (size, size)
        assert (m.question[[0, -1], :] == "#").all() and (m.question[:, [0, -1]] == "#").all()
        length = check_shortest_answer(m.question, m.answer)
        assert m.rating == length > threshold
        assert M.shortest_path(m.question) is not None
        assert (M.answer_for(m.question) == m.answer).all()


def test_hard_threshold_matches_maze_hard_and_min_path_overrides():
    assert M.hard_threshold(30) == 110
    assert [M.hard_threshold(n) for n in (8, 12, 20)] == [5, 14, 45]
    rng = np.random.default_rng(0)
    for _ in range(10):
        question, answer, length = M.generate(12, rng, min_path=30)
        assert length > 30 and check_shortest_answer(question, answer) == length
    with pytest.raises(ValueError, match="out of reach"):
        M.generate(8, rng, min_path=100)


def test_unreachable_threshold_is_an_error_not_a_hang():
    # 6 x 6 has 2 x 2 rooms: a path of 5 or 6 moves exists, but the one door that loops
    # opens closes the rooms into a cycle, so no pair that far apart has a unique shortest path
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="lower min_path or loops"):
        M.generate(6, rng, min_path=4, max_mazes=200)
    _, _, length = M.generate(6, rng, min_path=4, loops=0.0)
    assert length > 4


def test_loops_make_cycles():
    rng = np.random.default_rng(1)
    perfect, looped = M._carve(21, rng, 0.0), M._carve(21, rng, 0.2)
    # A tree on V open cells has V - 1 edges; every extra door adds a cycle.
    for open_, has_cycle in ((perfect, False), (looped, True)):
        edges = (open_[1:] & open_[:-1]).sum() + (open_[:, 1:] & open_[:, :-1]).sum()
        assert (edges > open_.sum() - 1) == has_cycle


def test_hand_written_maze():
    text = "#######S  # ## #  # ## G   #######"  # 34 chars: wrong length
    with pytest.raises(ValueError, match="got 34"):
        M.parse_maze(text)
    rows = ["######", "#S   #", "# ## #", "#  # #", "## #G#", "######"]
    q = M.parse_maze("".join(rows))
    assert M.shortest_path(q) == [(1, 1), (1, 2), (1, 3), (1, 4), (2, 4), (3, 4), (4, 4)]
    assert M.pretty(M.answer_for(q)).splitlines()[1] == "#Sooo#"
    blocked = q.copy()
    blocked[3, 4] = "#"
    assert M.shortest_path(blocked) is None
    with pytest.raises(ValueError, match="no path"):
        M.answer_for(blocked)


def test_text_format_round_trip_and_errors():
    m = M.generate_many(1, 30, seed=0)[0]
    text = M.format_maze(m.question)
    assert len(text) == 900
    assert (M.parse_maze(text) == m.question).all()
    assert (M.parse_maze(M.pretty(m.answer)) == m.answer).all()
    assert len(M.pretty(m.question).splitlines()) == 30
    with pytest.raises(ValueError, match="expected 900 characters.*got 899"):
        M.parse_maze(text[:-1], size=30)
    with pytest.raises(ValueError, match="got 899"):
        M.parse_maze(text[:-1])
    bad = text[:31] + "x" + text[32:]
    with pytest.raises(ValueError, match=r"bad character 'x' at position 31 \(row 1, column 1\)"):
        M.parse_maze(bad)
    two_s = text.replace("G", "S")
    with pytest.raises(ValueError, match="exactly one 'S'.*found 2"):
        M.parse_maze(two_s)
    with pytest.raises(ValueError, match="exactly one 'G'.*found 0"):
        M.parse_maze(text.replace("G", " "))


def test_same_seed_same_mazes():
    a, b = M.generate_many(20, 12, seed=7), M.generate_many(20, 12, seed=7)
    c = M.generate_many(20, 12, seed=8)
    assert all(
        (x.question == y.question).all() and x.rating == y.rating for x, y in zip(a, b, strict=True)
    )
    assert any((x.question != y.question).any() for x, y in zip(a, c, strict=True))
    assert a[0].source == "gen12-s7"


def test_csv_round_trip(tmp_path):
    mazes = M.generate_many(5, 30, seed=1) + M.generate_many(3, 12, seed=2)
    path = tmp_path / "sub" / "mazes.csv"
    M.write_csv(path, mazes)
    assert path.read_text().splitlines()[0] == "source,question,answer,rating"
    assert [p.name for p in path.parent.iterdir()] == ["mazes.csv"]  # no temp file left
    back = M.read_csv(path)
    assert len(back) == len(mazes)
    for x, y in zip(mazes, back, strict=True):
        assert x.source == y.source and x.rating == y.rating
        assert (x.question == y.question).all() and (x.answer == y.answer).all()


def test_csv_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        M.read_csv(tmp_path / "absent.csv")
    no_rating = tmp_path / "cols.csv"
    no_rating.write_text("source,question,answer\n")
    with pytest.raises(ValueError, match="lacks column.*rating"):
        M.read_csv(no_rating)
    m = M.generate_many(2, 8, seed=0)
    good = tmp_path / "good.csv"
    M.write_csv(good, m)
    lines = good.read_text().splitlines()
    q, a = M.format_maze(m[1].question), M.format_maze(m[1].answer)
    for row, pattern in [
        (f"x,{q[:-1]},{a},3", "line 3: expected N\\*N"),
        (f"x,{q},{a.replace('#', '?', 1)},3", "line 3: bad character '\\?'"),
        (f"x,{q},{q.replace('G', 'S')},3", "line 3: expected exactly one 'S'"),
        (f"x,{q},{a},three", "line 3:"),
        (f"x,{a},{a},3", "line 3: the question holds 'o'"),
    ]:
        bad = tmp_path / "bad.csv"
        bad.write_text("\n".join(lines[:2] + [row]) + "\n")
        with pytest.raises(ValueError, match=pattern):
            M.read_csv(bad)


def test_dihedral_keeps_shortest_paths():
    rng = np.random.default_rng(0)
    for m in M.generate_many(4, 12, seed=3) + M.generate_many(2, 30, seed=4):
        for k in range(8):
            q, a = M.dihedral(m.question, k), M.dihedral(m.answer, k)
            assert check_shortest_answer(q, a) == m.rating
            assert (M.answer_for(q) == a).all()
        q, a = M.augment(m.question, m.answer, rng)
        assert check_shortest_answer(q, a) == m.rating


def test_dihedral_is_the_group_of_the_square():
    grid = np.arange(20).reshape(4, 5)
    images = [M.dihedral(grid, k) for k in range(8)]
    keys = {(im.shape, im.tobytes()) for im in images}
    assert len(keys) == 8
    assert (M.dihedral(grid, 4) == grid.T).all() and (M.dihedral(grid, 2) == grid[::-1, ::-1]).all()
    batch = np.stack([grid, grid + 100])
    assert (M.dihedral(batch, 5)[1] == M.dihedral(grid + 100, 5)).all()
    with pytest.raises(ValueError, match="0..7"):
        M.dihedral(grid, 8)


def test_tokens_round_trip():
    m = M.generate_many(1, 12, seed=5)[0]
    tokens = M.to_tokens(m.answer)
    assert tokens.dtype == np.int64 and tokens.min() >= 1 and tokens.max() <= 5
    table = {"#": 1, " ": 2, "S": 3, "G": 4, "o": 5}
    assert all(tokens[idx] == table[ch] for idx, ch in np.ndenumerate(m.answer))
    assert (M.from_tokens(tokens) == m.answer).all()
    with pytest.raises(ValueError, match="token 0"):
        M.from_tokens(np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="bad character 'x'"):
        M.to_tokens(np.array([["x"]]))
