"""The one labels.csv reader and its consumers agree on the real labels."""

from __future__ import annotations

import numpy as np
import pytest

from export.faces import load_labels as load_faces
from tests.conftest import FACES
from training.datasets import read_shared
from training.labels import LabelsError, load_labels, read_label_rows


@pytest.fixture(scope="module")
def rows():
    return read_label_rows(FACES / "labels.csv")


def test_rows_are_parsed_once_for_every_reader(rows, labels):
    assert len(rows) == len(labels) > 30000
    assert [r.file for r in rows] == [row["file"] for row in labels]
    # impossible ages (the README's -7, 0, 116 ...) are unknown, possible ones are kept as written
    for row, raw in zip(rows, labels):
        value = int(raw["age"]) if raw["age"].strip().lstrip("-").isdigit() else None
        assert row.age == (value if value is not None and 1 <= value <= 100 else None), raw
    assert sum(r.age is None for r in rows) >= 40
    arrays = load_labels(FACES / "labels.csv")
    np.testing.assert_array_equal(np.isnan(arrays.age), [r.age is None for r in rows])
    faces = load_faces(FACES)
    assert [f.age for f in faces] == [r.age for r in rows]
    assert [f.male for f in faces] == list(arrays.male)
    records = read_shared(FACES).records
    assert [r.age for r in records] == [r.age for r in rows]
    assert [r.gender for r in records] == [r.gender for r in rows]


def test_unreadable_or_incomplete_labels_are_one_user_error(tmp_path, labels):
    bad = tmp_path / "labels.csv"
    bad.write_text("file,sex\na.jpg,m\n")
    with pytest.raises(LabelsError, match="lacks the column"):
        read_label_rows(bad)
    with pytest.raises(LabelsError, match="cannot read"):
        read_label_rows(tmp_path / "missing.csv")
    bad.write_text("file,gender,age,source\na.jpg,robot,30,wiki\n")
    assert read_label_rows(bad)[0].gender is None
    with pytest.raises(LabelsError, match="no male/female gender"):
        load_labels(bad)  # training needs every gender
