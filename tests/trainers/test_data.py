import json

import numpy as np
import pandas as pd
import pytest

from trainers.config import ConfigError, DataConfig, SplitConfig
from trainers.data import load_rows, make_splits


def _write_csv(path, n=100, labels=("pos", "neg"), weights=None):
    rng = np.random.default_rng(0)
    chosen = rng.choice(labels, size=n, p=weights)
    pd.DataFrame({"text": [f"row {i} text" for i in range(n)], "label": chosen}).to_csv(path, index=False)
    return path


def test_demo_data_loads_with_string_labels_mapped_to_ids():
    rows = load_rows(DataConfig(), "classification")
    assert rows.label_names == ["negative", "positive"]
    assert len(rows) == 1200
    assert set(np.unique(rows.labels)) == {0, 1}
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
    overall = rows.labels.mean()
    assert abs(rows.labels[val].mean() - overall) <= 1 / 40 + 1e-9  # stratified: same class mix


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
        assert abs(rows.labels[fold.val].mean() - rows.labels.mean()) <= 0.05 + 1e-9


def test_fingerprint_changes_with_the_data(tmp_path):
    a = load_rows(DataConfig(path=str(_write_csv(tmp_path / "a.csv", 50))), "classification")
    b = load_rows(DataConfig(path=str(_write_csv(tmp_path / "b.csv", 51))), "classification")
    assert a.fingerprint != b.fingerprint


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
    assert rows.labels.tolist() == [1, 0, 1, 0] and rows.label_names == ["0", "1"]


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
    with pytest.raises(ConfigError, match=r"^split: 3 rows cannot be split this way"):
        make_splits(tiny, SplitConfig(val_fraction=0.2))


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(ConfigError, match="data.path: .* does not exist"):
        load_rows(DataConfig(path=str(tmp_path / "none.csv")), "classification")
    odd = tmp_path / "d.xlsx"
    odd.write_text("x")
    with pytest.raises(ConfigError, match="unknown format '.xlsx'"):
        load_rows(DataConfig(path=str(odd)), "classification")
