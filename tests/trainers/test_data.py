import json

import numpy as np
import pandas as pd
import pytest

from trainers.data.read import load_rows
from trainers.data.split import Fold, Splits, load_splits, make_splits, save_splits, split_key
from trainers.errors import ConfigError
from trainers.settings import DataConfig, SplitConfig


def _write_csv(path, n=100, labels=("pos", "neg"), weights=None):
    rng = np.random.default_rng(0)
    chosen = rng.choice(labels, size=n, p=weights)
    pd.DataFrame({"text": [f"row {i} text" for i in range(n)], "label": chosen}).to_csv(path, index=False)
    return path


def test_demo_data_loads_with_string_labels_mapped_to_ids():
    rows = load_rows(DataConfig(), "classification")
    assert rows.label_names == ["negative", "positive"]
    assert len(rows) == 1200
    assert set(np.unique(rows.targets)) == {0, 1}
    qa = load_rows(DataConfig(), "causal_lm")
    assert len(qa) > 400 and qa.responses[0].strip()


def test_split_is_deterministic_and_stratified(tmp_path):
    rows = load_rows(DataConfig(path=str(_write_csv(tmp_path / "d.csv", 200, weights=[0.8, 0.2]))), "classification")
    a = make_splits(rows, SplitConfig(val_fraction=0.2, seed=3))
    b = make_splits(rows, SplitConfig(val_fraction=0.2, seed=3))
    c = make_splits(rows, SplitConfig(val_fraction=0.2, seed=4))
    assert np.array_equal(a.folds[0].val, b.folds[0].val) and a.fingerprint == b.fingerprint
    assert not np.array_equal(a.folds[0].val, c.folds[0].val) and a.fingerprint != c.fingerprint
    train, val = a.folds[0].train, a.folds[0].val
    assert len(val) == 40 and len(train) == 160 and not set(train) & set(val)
    overall = rows.targets.mean()
    assert abs(rows.targets[val].mean() - overall) <= 1 / 40 + 1e-9  # stratified: same class mix


def test_a_saved_split_loads_back_for_its_own_rows_and_config_only(tmp_path):
    """The sweep's data check saves its split; a trial loads it instead of splitting again (which imports
    sklearn before the trial's first step), but only where it is the split that trial would make."""
    rows = load_rows(DataConfig(path=str(_write_csv(tmp_path / "d.csv", 200, weights=[0.7, 0.3]))), "classification")
    path = tmp_path / "split.npz"
    configs = [
        SplitConfig(val_fraction=0.2, seed=3),
        SplitConfig(val_fraction=0.1, test_fraction=0.1),
        SplitConfig(num_folds=4),
    ]
    for cfg in configs:
        made = make_splits(rows, cfg)
        save_splits(made, split_key(rows.fingerprint, rows.task, cfg), path)
        loaded = load_splits(path, rows, cfg)
        assert loaded is not None and loaded.fingerprint == made.fingerprint
        assert np.array_equal(loaded.test, made.test) and len(loaded.folds) == len(made.folds)
        for a, b in zip(loaded.folds, made.folds, strict=True):
            assert np.array_equal(a.train, b.train) and np.array_equal(a.val, b.val)
    assert [p.name for p in tmp_path.iterdir() if p.name != "d.csv"] == ["split.npz"]  # (no part file left)
    # another seed or fraction, other rows (one more), another task's reading of them: split again
    assert load_splits(path, rows, SplitConfig(num_folds=4, seed=1)) is None
    assert load_splits(path, rows, SplitConfig(val_fraction=0.2, seed=3)) is None
    other = load_rows(DataConfig(path=str(_write_csv(tmp_path / "e.csv", 201, weights=[0.7, 0.3]))), "classification")
    assert load_splits(path, other, SplitConfig(num_folds=4)) is None
    # missing, not a split file, cut short, or indices that are not these rows': split again
    assert load_splits(tmp_path / "none.npz", rows, SplitConfig(num_folds=4)) is None
    whole = path.read_bytes()
    for broken in (b"not a split", whole[: len(whole) // 2]):
        (tmp_path / "bad.npz").write_bytes(broken)
        assert load_splits(tmp_path / "bad.npz", rows, SplitConfig(num_folds=4)) is None
    cfg = SplitConfig(val_fraction=0.2)
    beyond = Splits([Fold(np.arange(150), np.arange(150, 201))], np.zeros(0, dtype=np.int64), "x")
    save_splits(beyond, split_key(rows.fingerprint, rows.task, cfg), path)
    assert load_splits(path, rows, cfg) is None


def test_ninety_ten_and_held_out_test(tmp_path):
    rows = load_rows(DataConfig(path=str(_write_csv(tmp_path / "d.csv", 200))), "classification")
    s = make_splits(rows, SplitConfig(val_fraction=0.1, test_fraction=0.1))
    assert (len(s.folds[0].train), len(s.folds[0].val), len(s.test)) == (160, 20, 20)
    assert not set(s.test) & (set(s.folds[0].train) | set(s.folds[0].val))


def test_k_folds_partition_the_rows_and_are_stratified(tmp_path):
    rows = load_rows(DataConfig(path=str(_write_csv(tmp_path / "d.csv", 100, weights=[0.7, 0.3]))), "classification")
    s = make_splits(rows, SplitConfig(num_folds=5, seed=1))
    assert len(s.folds) == 5
    vals = np.concatenate([f.val for f in s.folds])
    assert sorted(vals.tolist()) == list(range(100))  # every row validated exactly once
    for fold in s.folds:
        assert len(fold.val) == 20 and not set(fold.train) & set(fold.val)
        assert abs(rows.targets[fold.val].mean() - rows.targets.mean()) <= 0.05 + 1e-9


def test_fingerprint_is_the_content_not_the_path(tmp_path):
    a = load_rows(DataConfig(path=str(_write_csv(tmp_path / "a.csv", 50))), "classification")
    b = load_rows(DataConfig(path=str(_write_csv(tmp_path / "b.csv", 51))), "classification")
    (tmp_path / "copy").mkdir()
    same = load_rows(DataConfig(path=str(_write_csv(tmp_path / "copy" / "a.csv", 50))), "classification")
    assert a.fingerprint != b.fingerprint
    assert same.fingerprint == a.fingerprint and same.source != a.source
    cfg = SplitConfig(val_fraction=0.2, seed=1)
    assert make_splits(same, cfg).fingerprint == make_splits(a, cfg).fingerprint


def test_regression_demo_data_and_number_checks(tmp_path):
    rows = load_rows(DataConfig(), "regression")
    assert len(rows) == 600 and rows.targets.dtype == np.float32
    assert 0.0 <= rows.targets.min() < 1.0 and 4.0 < rows.targets.max() <= 5.0
    split = make_splits(rows, SplitConfig(val_fraction=0.2))
    assert (len(split.folds[0].train), len(split.folds[0].val)) == (480, 120)
    path = tmp_path / "r.csv"
    pd.DataFrame({"text": ["a", "b", "c", "d"], "label": [1.5, "n/a", 2.0, ""]}).to_csv(path, index=False)
    with pytest.raises(ConfigError) as err:
        load_rows(DataConfig(path=str(path)), "regression")
    assert err.value.problems == [
        f"data.label_column: 2 row(s) of '{path}' have no number in 'label' (rows 2, 4); "
        "regression needs a number in every row"
    ]


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet", "hf"])
def test_every_format_loads_the_same_rows(tmp_path, fmt):
    frame = pd.DataFrame({"sentence": ["good one", "bad one", "fine", "awful"], "y": [1, 0, 1, 0]})
    path = tmp_path / f"d.{fmt}"
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "tsv":
        path.write_text("sentence\ty\n" + "".join(f"{s}\t{y}\n" for s, y in frame.itertuples(index=False)))
    elif fmt == "jsonl":
        path.write_text(
            "".join(json.dumps({"sentence": s, "y": int(y)}) + "\n" for s, y in frame.itertuples(index=False))
        )
    elif fmt == "parquet":
        frame.to_parquet(path)
    else:
        import datasets

        datasets.Dataset.from_pandas(frame).save_to_disk(str(path))
    rows = load_rows(DataConfig(path=str(path), text_column="sentence", label_column="y"), "classification")
    assert rows.texts == ["good one", "bad one", "fine", "awful"]
    assert rows.targets.tolist() == [1, 0, 1, 0] and rows.label_names == ["0", "1"]


def test_missing_column_names_the_columns_that_exist(tmp_path):
    path = _write_csv(tmp_path / "d.csv")
    with pytest.raises(ConfigError) as err:
        load_rows(DataConfig(path=str(path), text_column="sentence"), "classification")
    assert err.value.problems == [
        f"data.text_column: column 'sentence' is not in '{path}'; columns are ['text', 'label']; set data.text_column"
    ]


def test_empty_text_names_the_rows(tmp_path):
    path = tmp_path / "d.csv"
    pd.DataFrame({"text": ["ok", " ", "fine", ""], "label": [0, 1, 0, 1]}).to_csv(path, index=False)
    with pytest.raises(ConfigError, match=r"data.text_column: 2 row\(s\) .* \(rows 2, 4\); remove or fill them"):
        load_rows(DataConfig(path=str(path)), "classification")


def test_single_class_is_an_error(tmp_path):
    path = _write_csv(tmp_path / "d.csv", 20, labels=("pos",))
    with pytest.raises(ConfigError, match=r"data.label_column: 'label' has a single class \['pos'\]"):
        load_rows(DataConfig(path=str(path)), "classification")


def test_too_few_rows_for_split_and_folds(tmp_path):
    rows = load_rows(DataConfig(path=str(_write_csv(tmp_path / "d.csv", 6))), "classification")
    with pytest.raises(ConfigError, match=r"split.num_folds: 5 folds need >= 5 rows of every class"):
        make_splits(rows, SplitConfig(num_folds=5))
    tiny = load_rows(DataConfig(path=str(_write_csv(tmp_path / "t.csv", 3, weights=[0.5, 0.5]))), "classification")
    with pytest.raises(ConfigError, match=r"^data: label 'neg' has 1 row in .*t.csv; a stratified split needs >= 2"):
        make_splits(tiny, SplitConfig(val_fraction=0.2))
    both = load_rows(DataConfig(path=str(_write_csv(tmp_path / "b.csv", 8))), "classification")
    with pytest.raises(ConfigError, match=r"^split.val_fraction: 0.1 of 8 rows holds out 1 rows for 2 labels"):
        make_splits(both, SplitConfig(val_fraction=0.1))


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(ConfigError, match="data.path: .* does not exist"):
        load_rows(DataConfig(path=str(tmp_path / "none.csv")), "classification")
    odd = tmp_path / "d.xlsx"
    odd.write_text("x")
    with pytest.raises(ConfigError, match="unknown format '.xlsx'"):
        load_rows(DataConfig(path=str(odd)), "classification")


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("binary.csv", bytes(range(256)) * 4, "it is binary, not text (a NUL byte in row 1)"),
        ("latin1.csv", "text,label\nfine,neg\ncaf\xe9 au lait,pos\n".encode("latin-1"), "row 3 (byte 23) is not UTF-8"),
        ("empty.csv", b"", "the file is empty; it needs a header row"),
        ("ragged.csv", b"text,label\na,pos\nb,neg,extra,more\n", "row 3 has 4 fields where the header has 2"),
        ("ragged.jsonl", b'{"text": "a", "label": 1}\n{"text": \n', "it is not a valid .jsonl file"),
    ],
)
def test_unreadable_files_are_one_line_naming_the_file_and_row(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ConfigError) as err:
        load_rows(DataConfig(path=str(path)), "classification")
    assert len(err.value.problems) == 1
    assert err.value.problems[0].startswith(f"data.path: '{path}' cannot be read: {reason}")


def test_given_validation_and_test_files_are_their_parts(tmp_path):
    train, val, test = (
        _write_csv(tmp_path / f"{n}.csv", size) for n, size in (("train", 60), ("val", 20), ("test", 16))
    )
    cfg = DataConfig(path=str(train), val_path=str(val), test_path=str(test))
    rows = load_rows(cfg, "classification")
    assert len(rows) == 96 and rows.given == {"val": (60, 80), "test": (80, 96)}
    splits = make_splits(rows, SplitConfig(val_fraction=0.3))
    assert splits.folds[0].train.tolist() == list(range(60))  # the whole training file trains
    assert splits.folds[0].val.tolist() == list(range(60, 80)) and splits.test.tolist() == list(range(80, 96))
    # the fingerprint covers the given files: another test file, another split
    other = _write_csv(tmp_path / "other.csv", 17)
    again = load_rows(DataConfig(path=str(train), val_path=str(val), test_path=str(other)), "classification")
    assert make_splits(again, SplitConfig()).fingerprint != splits.fingerprint
    # only a test file: validation is split from the training file as usual
    only = load_rows(DataConfig(path=str(train), test_path=str(test)), "classification")
    split = make_splits(only, SplitConfig(val_fraction=0.25))
    assert (len(split.folds[0].train), len(split.folds[0].val), len(split.test)) == (45, 15, 16)
    # a validation file and a test fraction: the test part comes out of the training file
    held = make_splits(
        load_rows(DataConfig(path=str(train), val_path=str(val)), "classification"), SplitConfig(test_fraction=0.2)
    )
    assert (len(held.folds[0].train), len(held.folds[0].val), len(held.test)) == (48, 20, 12)
    assert set(held.test) < set(range(60))


def test_given_files_rules(tmp_path):
    train, val = _write_csv(tmp_path / "train.csv", 60), _write_csv(tmp_path / "val.csv", 20)
    rows = load_rows(DataConfig(path=str(train), val_path=str(val)), "classification")
    with pytest.raises(ConfigError, match="split.num_folds: k-fold cross-validation makes its own validation folds"):
        make_splits(rows, SplitConfig(num_folds=3))
    tested = load_rows(DataConfig(path=str(train), test_path=str(val)), "classification")
    with pytest.raises(ConfigError, match=r"split.test_fraction: 0.1 and data.test_path both name a test part"):
        make_splits(tested, SplitConfig(test_fraction=0.1))
    odd = _write_csv(tmp_path / "odd.csv", 10, labels=("pos", "maybe"))
    with pytest.raises(ConfigError, match=r"labels \['maybe'\] of '.*odd.csv' are not among the training labels"):
        load_rows(DataConfig(path=str(train), val_path=str(odd)), "classification")
    with pytest.raises(ConfigError, match=r"data.test_path: '.*nope.csv' does not exist"):
        load_rows(DataConfig(path=str(train), test_path=str(tmp_path / "nope.csv")), "classification")


def test_headerless_files_name_columns_by_position_and_the_mistake_is_explained(tmp_path):
    path = tmp_path / "glue.tsv"
    path.write_text("".join(f"{i % 2}\tthis film was {'good' if i % 2 else 'bad'} number {i}\n" for i in range(30)))
    with pytest.raises(ConfigError) as err:
        load_rows(DataConfig(path=str(path)), "classification")
    assert err.value.problems == [
        f"data.header: the first row of '{path}' looks like data, not column names (['0', 'this film was bad number 0']); "
        "for a file without a header row set data.header: false and name columns by position "
        "(data.text_column: 1, data.label_column: 0)"
    ]
    rows = load_rows(DataConfig(path=str(path), header=False, text_column=1, label_column=0), "classification")
    assert len(rows) == 30 and rows.label_names == ["0", "1"] and rows.texts[1] == "this film was good number 1"


def test_given_files_must_hold_rows_and_may_be_constant_where_training_may_not(tmp_path):
    train = _write_csv(tmp_path / "train.csv", 40)
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n")
    with pytest.raises(ConfigError, match=r"data.val_path: '.*empty.csv' holds no rows; add one row per example"):
        load_rows(DataConfig(path=str(train), val_path=str(empty)), "classification")
    scores = tmp_path / "scores.csv"
    scores.write_text("text,label\n" + "".join(f"row {i},{i % 5}\n" for i in range(30)))
    flat = tmp_path / "flat.csv"
    flat.write_text("text,label\na,2.0\nb,2.0\n")
    rows = load_rows(DataConfig(path=str(scores), test_path=str(flat)), "regression")
    assert rows.given == {"test": (30, 32)}
    with pytest.raises(ConfigError, match="is constant"):
        load_rows(DataConfig(path=str(flat)), "regression")
    with pytest.raises(ConfigError, match="split.num_folds: k-fold trials are not evaluated on a test part"):
        make_splits(
            load_rows(DataConfig(path=str(train), test_path=str(train)), "classification"), SplitConfig(num_folds=2)
        )
