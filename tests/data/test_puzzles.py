import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from attractor.data import maze, puzzles, sudoku, sudoku_generate


@pytest.fixture(scope="module")
def sudoku6():
    shape = sudoku.SudokuShape(2, 3)
    return [
        sudoku.Puzzle("t", q, a, r) for q, a, r in sudoku_generate.generate_many(40, shape, seed=1)
    ]


@pytest.fixture(scope="module")
def mazes():
    return maze.generate_many(12, 9, seed=3)


def _decoded_sudoku(item):
    return sudoku.from_tokens(item["inputs"].numpy()), sudoku.from_tokens(item["labels"].numpy())


def _check_maze(question, answer):
    """The answer marks a shortest S -> G path over open cells, and only that."""
    path = maze.shortest_path(question)
    assert path is not None
    cells = {tuple(int(v) for v in rc) for rc in np.argwhere(answer == maze.PATH)}
    assert len(cells) == len(path) - 2
    assert not (question[answer == maze.PATH] == maze.WALL).any()
    assert (np.where(answer == maze.PATH, maze.OPEN, answer) == question).all()
    # the marked cells plus S and G form a connected chain of the shortest length
    chain = cells | {tuple(path[0]), tuple(path[-1])}
    for r, c in cells:
        assert sum((r + dr, c + dc) in chain for dr, dc in maze._STEPS) == 2


@pytest.mark.parametrize("augment", [False, True])
def test_sudoku_dataset_tokens_decode_to_solved_puzzles(sudoku6, augment):
    ds = puzzles.PuzzleDataset(sudoku6, "sudoku", augment=augment, seed=7)
    assert len(ds) == 40 and ds.vocab_size == 8
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            item = ds[i]
            assert item["index"] == i
            assert item["inputs"].dtype == torch.long and item["inputs"].shape == (36,)
            assert item["labels"].shape == (36,)
            assert int(item["inputs"].min()) >= 1 and int(item["labels"].max()) <= 7
            question, answer = _decoded_sudoku(item)
            assert sudoku.is_solution(answer, question)
            assert sudoku.solve(question).unique


def test_maze_dataset_tokens_decode_to_shortest_paths(mazes):
    ds = puzzles.PuzzleDataset(mazes, "maze", augment=True, seed=2)
    assert ds.vocab_size == 6
    for epoch in (0, 3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            item = ds[i]
            assert item["inputs"].shape == (81,) and item["inputs"].dtype == torch.long
            question = maze.from_tokens(item["inputs"].numpy().reshape(9, 9))
            answer = maze.from_tokens(item["labels"].numpy().reshape(9, 9))
            _check_maze(question, answer)


def test_augmentation_is_deterministic_per_seed_epoch_index(sudoku6):
    a = puzzles.PuzzleDataset(sudoku6, "sudoku", seed=5)
    b = puzzles.PuzzleDataset(sudoku6, "sudoku", seed=5)
    a.set_epoch(2)
    b.set_epoch(2)
    for i in (0, 7, 39):
        assert torch.equal(a[i]["inputs"], b[i]["inputs"])
        assert torch.equal(a[i]["labels"], b[i]["labels"])
    epoch2 = [a[i]["inputs"] for i in range(len(a))]
    a.set_epoch(3)
    epoch3 = [a[i]["inputs"] for i in range(len(a))]
    assert sum(not torch.equal(x, y) for x, y in zip(epoch2, epoch3, strict=True)) > 30
    other = puzzles.PuzzleDataset(sudoku6, "sudoku", seed=6)
    other.set_epoch(2)
    assert any(not torch.equal(other[i]["inputs"], epoch2[i]) for i in range(len(a)))
    plain = puzzles.PuzzleDataset(sudoku6, "sudoku", augment=False)
    assert torch.equal(plain[3]["inputs"], torch.from_numpy(sudoku.to_tokens(sudoku6[3].question)))


def _versions(data, index):
    """Every drawn grid of example `index` over 60 epochs, as question + answer strings."""
    seen = []
    for epoch in range(60):
        data.set_epoch(epoch)
        question, answer = data.grids(index)
        seen.append(np.asarray(question).tobytes() + np.asarray(answer).tobytes())
    return seen


def test_sudoku_pool_draws_one_of_n_fixed_shuffles_or_the_original_each_epoch(sudoku6):
    """pool=3: every epoch's grid is the original or one of three shuffles, all four
    appear, the shuffles are the same in every epoch and valid puzzles of the same answer;
    a fresh draw (pool 0) instead shows a new grid nearly every epoch."""
    pooled = puzzles.PuzzleDataset(sudoku6, "sudoku", seed=2, pool=3)
    ex = sudoku6[5]
    pool = [pooled.pool_version(5, v) for v in range(4)]
    assert np.array_equal(pool[0][0], ex.question) and np.array_equal(pool[0][1], ex.answer)
    keys = {q.tobytes() + a.tobytes() for q, a in pool}
    assert len(keys) == 4
    for q, a in pool[1:]:
        solved = sudoku.solve(q)  # unique, and the shuffled answer
        assert solved.count == 1 and np.array_equal(solved.solutions[0], a)
        assert int((q != 0).sum()) == int((ex.question != 0).sum())
    seen = _versions(pooled, 5)
    assert set(seen) == keys
    fresh = _versions(puzzles.PuzzleDataset(sudoku6, "sudoku", seed=2), 5)
    assert len(set(fresh)) > 40


def test_maze_pool_7_is_the_eight_dihedral_versions(mazes, sudoku6):
    data = puzzles.PuzzleDataset(mazes, "maze", seed=1, pool=7)
    q = mazes[2].question
    rotations = [np.rot90(q, k) for k in range(4)]
    want = {g.tobytes() for g in rotations + [r.T for r in rotations]}
    assert {data.pool_version(2, v)[0].tobytes() for v in range(8)} == want
    assert {s[: q.nbytes] for s in _versions(data, 2)} == want
    with pytest.raises(ValueError, match=r"^puzzles: pool must be in 0\.\.7 for mazes, got 8;"):
        puzzles.PuzzleDataset(mazes, "maze", pool=8)
    with pytest.raises(ValueError, match=r"^puzzles: pool must be >= 0, got -1;"):
        puzzles.PuzzleDataset(sudoku6, "sudoku", pool=-1)


def test_dataset_rejects_wrong_kind(sudoku6):
    with pytest.raises(ValueError, match="unknown kind"):
        puzzles.PuzzleDataset(sudoku6, "kakuro")
    with pytest.raises(ValueError, match="'maze' but the examples are 'sudoku'"):
        puzzles.PuzzleDataset(sudoku6, "maze")


def test_split_is_disjoint_reproducible_and_seed_dependent(sudoku6):
    examples = sudoku6 + sudoku6[:5]  # repeated questions count once
    train, test, record = puzzles.make_split(examples, 20, 15, seed=0)
    assert len(train) == 20 and len(test) == 15
    train_q = {puzzles.question_hash(p) for p in train}
    test_q = {puzzles.question_hash(p) for p in test}
    assert len(train_q) == 20 and len(test_q) == 15 and not train_q & test_q
    assert record["seed"] == 0 and record["n_distinct"] == 40 and record["kind"] == "sudoku"
    assert not set(record["train_indices"]) & set(record["test_indices"])
    again = puzzles.make_split(examples, 20, 15, seed=0)[2]
    assert again == record
    other = puzzles.make_split(examples, 20, 15, seed=1)[2]
    assert other["train_indices"] != record["train_indices"]
    with pytest.raises(ValueError, match="only 40 distinct questions"):
        puzzles.make_split(examples, 30, 15, seed=0)


def test_save_load_split_round_trip_and_detects_changes(tmp_path, sudoku6):
    train, test, record = puzzles.make_split(sudoku6, 25, 10, seed=4)
    puzzles.save_split(tmp_path, train, test, record)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["split.json", "test.csv", "train.csv"]
    train2, test2, record2 = puzzles.load_split(tmp_path)
    assert [sudoku.format_grid(p.question) for p in train2] == [
        sudoku.format_grid(p.question) for p in train
    ]
    assert len(test2) == 10 and record2["train_indices"] == record["train_indices"]
    ds = puzzles.PuzzleDataset.from_csv(tmp_path / "test.csv", "sudoku", augment=False)
    assert torch.equal(ds[0]["labels"], torch.from_numpy(sudoku.to_tokens(test[0].answer)))

    lines = (tmp_path / "test.csv").read_text().splitlines()
    lines[1] = "edited" + lines[1][1:]  # the source column of the first row
    (tmp_path / "test.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="test.csv changed since the split was saved"):
        puzzles.load_split(tmp_path)

    # consistent edit: the file hash is updated but a question swapped
    train3 = [test[0]] + train[1:]
    puzzles.save_split(tmp_path, train3, test, record)
    with pytest.raises(ValueError, match="do not match the hashes"):
        puzzles.load_split(tmp_path)
    with pytest.raises(FileNotFoundError, match="no split.json"):
        puzzles.load_split(tmp_path / "nowhere")


def test_builders_write_reproducible_splits(tmp_path):
    rec = puzzles.build_sudoku_split(tmp_path / "s1", box=(2, 2), n_train=8, n_test=6, seed=3)
    rec_again = puzzles.build_sudoku_split(tmp_path / "s2", box=(2, 2), n_train=8, n_test=6, seed=3)
    assert rec["train_hashes"] == rec_again["train_hashes"]
    assert (tmp_path / "s1" / "train.csv").read_bytes() == (
        tmp_path / "s2" / "train.csv"
    ).read_bytes()
    train, test, record = puzzles.load_split(tmp_path / "s1")
    assert len(train) == 8 and len(test) == 6 and record["generator"]["box"] == [2, 2]
    assert all(sudoku.is_solution(p.answer, p.question) for p in train + test)

    rec_m = puzzles.build_maze_split(tmp_path / "m", size=9, n_train=5, n_test=4, seed=1)
    train, test, _ = puzzles.load_split(tmp_path / "m")
    assert len(train) == 5 and len(test) == 4 and rec_m["kind"] == "maze"
    for m in train + test:
        _check_maze(m.question, m.answer)
    meta = json.loads((tmp_path / "m" / "split.json").read_text())
    assert set(meta["files"]) == {"train", "test"}


def test_split_from_csv_draws_a_seeded_training_set_and_keeps_the_test_file(tmp_path):
    from attractor.data.puzzles import load_split, question_hash, split_from_csv

    shape = sudoku.SudokuShape(2, 2)
    made = [
        sudoku.Puzzle("pub", q, a, r)
        for q, a, r in sudoku_generate.generate_many(30, shape, seed=5)
    ]
    sudoku.write_csv(tmp_path / "pub_train.csv", made[:20])
    sudoku.write_csv(tmp_path / "pub_test.csv", made[20:])
    record = split_from_csv(
        tmp_path / "split",
        tmp_path / "pub_train.csv",
        tmp_path / "pub_test.csv",
        "sudoku",
        8,
        seed=1,
    )
    train, test, loaded = load_split(tmp_path / "split")
    assert len(train) == 8 and len(test) == 10 and loaded["n_test"] == 10
    public = {question_hash(p) for p in made[:20]}
    assert {question_hash(p) for p in train} <= public
    assert [question_hash(p) for p in test] == [question_hash(p) for p in made[20:]]
    again = split_from_csv(
        tmp_path / "again",
        tmp_path / "pub_train.csv",
        tmp_path / "pub_test.csv",
        "sudoku",
        8,
        seed=1,
    )
    assert again["train_hashes"] == record["train_hashes"]


WRITES = re.compile(
    r"tempfile|mkstemp|os\.replace|\.rename\(|\.write_text\(|\.write_bytes\(|json\.dump\("
    r"|open\([^)]*['\"][wa]b?['\"]"
)


def test_the_data_layer_writes_files_only_through_the_one_atomic_write():
    """No module of attractor/data opens a file for writing, renames or makes a temporary
    file itself: every write goes through attractor.core.atomic. The one exception is
    staging.py, which publishes a finished dataset directory as a whole."""
    data = Path(puzzles.__file__).parent
    found = {
        f"{path.name}:{number}: {line.strip()}"
        for path in sorted(data.glob("*.py"))
        if path.name != "staging.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if WRITES.search(line)
    }
    assert not found, sorted(found)
    users = {p.name for p in data.glob("*.py") if "attractor.core.atomic" in p.read_text()}
    assert {"puzzle_csv.py", "puzzles.py", "text.py", "tokenizer.py"} <= users
