"""Dataset adapters on tiny fixture datasets built from real faces, and the splits."""

from __future__ import annotations

import csv
import datetime as dt
import shutil
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io

from tests.conftest import FACES
from training.datasets import (
    DatasetError,
    FaceRecord,
    age_at_photo,
    detect_kind,
    load_dataset,
    parse_utkface_name,
    read_imdb_wiki,
    split_records,
)


@pytest.fixture(scope="module")
def real_rows(labels):
    wiki = [r for r in labels if r["source"] == "wiki"][:8]
    utk = [r for r in labels if r["source"] == "utkface"][:8]
    return wiki, utk


def copy_face(row: dict[str, str], dest: Path) -> Path:
    """A real face at dest; converted when the extension asks for another format."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    src = FACES / row["file"]
    if dest.suffix.lower() == src.suffix.lower():
        shutil.copyfile(src, dest)
    else:
        assert cv2.imwrite(str(dest), cv2.imread(str(src)))
    return dest


def readable(path: Path) -> bool:
    image = cv2.imread(str(path))
    return image is not None and image.shape[0] > 16


def datenum(day: dt.date) -> float:
    """MATLAB serial date number of a date, as IMDB-WIKI stores dob."""
    return float(day.toordinal() + 366)


# --- shared layout -----------------------------------------------------------------------


def test_shared_layout(tmp_path, real_rows):
    wiki, utk = real_rows
    rows = [dict(wiki[0]), dict(wiki[1]), dict(utk[0]), dict(utk[1])]
    rows[1]["age"] = "0"  # impossible: unknown
    rows[2]["age"] = "116"
    rows[3]["age"] = ""
    for row in rows:
        copy_face(row, tmp_path / row["file"])
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    data = load_dataset(tmp_path)
    assert data.kind == "shared" and len(data) == 4
    first = data.records[0]
    assert first.path == tmp_path / wiki[0]["file"] and readable(first.path)
    assert first.gender == wiki[0]["gender"] and first.age == int(wiki[0]["age"])
    assert first.race is None and first.source == "wiki" and first.identity is None
    assert [r.age for r in data.records[1:]] == [None, None, None]
    assert data.records[2].race == utk[0]["race"] and data.records[2].source == "utkface"


def test_shared_layout_real_labels():
    data = load_dataset(FACES)
    assert len(data) > 30000
    assert set(Counter(r.source for r in data)) == {"wiki", "utkface"}
    assert {r.gender for r in data} == {"male", "female"}
    ages = [r.age for r in data if r.age is not None]
    assert min(ages) >= 1 and max(ages) <= 100
    assert {r.race for r in data if r.source == "utkface"} == {"white", "black", "asian", "indian", "other"}


def test_shared_layout_errors(tmp_path):
    with pytest.raises(DatasetError, match="no labels.csv"):
        load_dataset(tmp_path, "shared")
    (tmp_path / "labels.csv").write_text("name,sex\na.jpg,m\n")
    with pytest.raises(DatasetError, match="lacks the column"):
        load_dataset(tmp_path)


# --- IMDB-WIKI ---------------------------------------------------------------------------


def cell(values: list) -> np.ndarray:
    out = np.empty((1, len(values)), dtype=object)
    for i, v in enumerate(values):
        if isinstance(v, str):
            v = np.array([v]) if v else np.zeros((0,), dtype="<U1")  # an empty name is an empty cell
        out[0, i] = v
    return out


def write_wiki_mat(root: Path, rows: list[dict[str, str]]) -> Path:
    # (birthday, photo year, gender, name, face score, second face score)
    entries = [
        (dt.date(1981, 5, 5), 2009, 1.0, "Ann Example", 4.3, np.nan),  # 28 on 2009-07-01
        (dt.date(1981, 8, 5), 2009, 0.0, "Bea Example", 3.1, np.nan),  # 27: birthday after July 1
        (dt.date(1981, 7, 1), 2009, np.nan, "", 2.0, np.nan),  # 28: birthday on July 1; gender unknown
        (dt.date(2010, 1, 1), 2009, 1.0, "Cid Example", 2.5, np.nan),  # born after the photo: unknown
        (dt.date(1850, 3, 1), 2009, 0.0, "Dee Example", 2.5, np.nan),  # 159: unknown
        (dt.date(1970, 1, 1), 2000, 1.0, "Ann Example", 1.5, np.nan),  # same person as the first
        (dt.date(1960, 1, 1), 2000, 1.0, "Eve Example", -np.inf, np.nan),  # no face found
        (dt.date(1960, 1, 1), 2000, 0.0, "Fay Example", 0.5, np.nan),  # weak face
        (dt.date(1960, 1, 1), 2000, 1.0, "Gus Example", 3.0, 1.7),  # a second face
    ]
    paths = []
    for i, (row, entry) in enumerate(zip(rows, entries)):
        rel = f"{i:02d}/{1000 + i}_{entry[0].isoformat()}_{entry[1]}.webp"
        copy_face(row, root / rel)
        paths.append(rel)
    struct = {
        "dob": np.array([[datenum(e[0]) for e in entries]]),
        "photo_taken": np.array([[e[1] for e in entries]], dtype=np.uint16),
        "full_path": cell(paths),
        "gender": np.array([[e[2] for e in entries]]),
        "name": cell([e[3] for e in entries]),
        "face_location": cell([np.array([1.0, 2.0, 3.0, 4.0]) for _ in entries]),
        "face_score": np.array([[e[4] for e in entries]]),
        "second_face_score": np.array([[e[5] for e in entries]]),
    }
    path = root / "wiki.mat"
    scipy.io.savemat(str(path), {"wiki": struct})
    return path


def test_imdb_wiki_mat(tmp_path, real_rows):
    wiki, utk = real_rows
    mat = write_wiki_mat(tmp_path / "wiki_crop", (wiki + utk)[:9])
    data = load_dataset(mat)
    assert data.kind == "imdb-wiki"
    # default: face score >= 1, no second face
    assert data.skipped == Counter({"low_face_score": 2, "second_face": 1})
    assert [r.age for r in data] == [28, 27, 28, None, None, 30]
    assert [r.gender for r in data] == ["male", "female", None, "male", "female", "male"]
    assert [r.identity for r in data] == ["Ann Example", "Bea Example", None, "Cid Example", "Dee Example", "Ann Example"]
    assert all(r.source == "wiki" and r.race is None for r in data)
    assert all(readable(r.path) for r in data)
    assert data.records[0].path == tmp_path / "wiki_crop" / "00" / "1000_1981-05-05_2009.webp"
    # the folder is detected too
    assert detect_kind(tmp_path / "wiki_crop") == "imdb-wiki"


def test_imdb_wiki_filters_are_options(tmp_path, real_rows):
    wiki, utk = real_rows
    mat = write_wiki_mat(tmp_path, (wiki + utk)[:9])
    assert len(read_imdb_wiki(mat, min_face_score=None, drop_second_face=False)) == 9
    assert len(read_imdb_wiki(mat, min_face_score=None)) == 8
    assert len(read_imdb_wiki(mat, min_face_score=0.1, drop_second_face=False)) == 8
    assert len(read_imdb_wiki(mat, min_face_score=3.0)) == 2


def test_age_at_photo_edges():
    assert age_at_photo(datenum(dt.date(1990, 7, 2)), 2000) == 9
    assert age_at_photo(datenum(dt.date(1990, 6, 30)), 2000) == 10
    assert age_at_photo(float("nan"), 2000) is None
    assert age_at_photo(0.0, 2000) is None  # outside the calendar
    assert age_at_photo(datenum(dt.date(1999, 12, 31)), 2000) is None  # aged 0: impossible here


def test_bad_mat_is_one_error(tmp_path):
    bad = tmp_path / "wiki.mat"
    bad.write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(DatasetError, match="cannot read"):
        load_dataset(bad)


# --- AFAD --------------------------------------------------------------------------------


def test_afad(tmp_path, real_rows):
    wiki, utk = real_rows
    root = tmp_path / "AFAD-Full"
    copy_face(utk[0], root / "25" / "111" / "100-0.jpg")
    copy_face(utk[1], root / "25" / "112" / "101-0.jpg")
    copy_face(utk[2], root / "61" / "112" / "102-1.jpg")
    copy_face(utk[3], root / "150" / "111" / "103-1.jpg")  # impossible age folder
    copy_face(utk[4], root / "40" / "113" / "104-0.jpg")  # not a gender code
    (root / "README.txt").write_text("not an image")
    (root / "25" / "111" / "notes.txt").write_text("not an image")
    assert detect_kind(root) == "afad"
    data = load_dataset(root)
    got = sorted((r.path.name, r.gender, r.age) for r in data)
    assert got == [
        ("100-0.jpg", "male", 25),
        ("101-0.jpg", "female", 25),
        ("102-1.jpg", "female", 61),
        ("103-1.jpg", "male", None),
    ]
    assert data.skipped["unknown_gender_folder"] == 1
    assert all(r.source == "afad" and r.identity is None and readable(r.path) for r in data)


# --- UTKFace -----------------------------------------------------------------------------


def test_utkface_names():
    assert parse_utkface_name("26_0_2_20170104023102422.jpg.chip.jpg") == (26, "male", "asian")
    assert parse_utkface_name("1_1_4_20161221193016140.jpg") == (1, "female", "other")
    assert parse_utkface_name("116_1_3_20170120134921760.jpg") == (None, "female", "indian")
    assert parse_utkface_name("39_1_20170116174525125.jpg.chip.jpg") == "malformed_name"  # race missing
    assert parse_utkface_name("30_3_0_20170116174525125.jpg") == "bad_gender"
    assert parse_utkface_name("30_0_7_20170116174525125.jpg") == "bad_race"


def test_utkface(tmp_path, real_rows):
    _, utk = real_rows
    root = tmp_path / "UTKFace"
    for i, row in enumerate(utk[:4]):
        name = Path(row["file"]).name.replace(".webp", ".jpg.chip.jpg")
        copy_face(row, root / f"part{i % 2 + 1}" / name)
    copy_face(utk[4], root / "0_0_0_20170110215648859.jpg")  # age 0: unknown
    copy_face(utk[5], root / "39_1_20170116174525125.jpg.chip.jpg")  # the known malformed ones
    copy_face(utk[6], root / "61_1_20170109142408075.jpg.chip.jpg")
    copy_face(utk[7], root / "photo.jpg")
    assert detect_kind(root) == "utkface"
    data = load_dataset(root)
    assert len(data) == 5 and data.skipped == Counter({"malformed_name": 3})
    expected = {Path(r["file"]).name.split(".")[0]: r for r in utk[:4]}
    for record in data:
        key = record.path.name.split(".")[0]
        if key.startswith("0_"):
            assert record.age is None and record.gender == "male" and record.race == "white"
            continue
        row = expected[key]
        assert (record.gender, record.age, record.race) == (row["gender"], int(row["age"]), row["race"])
        assert record.source == "utkface" and record.identity is None and readable(record.path)


# --- the prototype's folders -------------------------------------------------------------


def test_prototype_folders(tmp_path, real_rows):
    wiki, _ = real_rows
    root = tmp_path / "proto"
    copy_face(wiki[0], root / "male" / "10001_John_Smith_male_34.jpg")
    copy_face(wiki[1], root / "male" / "10002_John_Smith_male_51.jpg")
    copy_face(wiki[2], root / "female" / "10003_Ann Lee_female_0.jpg")  # impossible age
    copy_face(wiki[3], root / "female" / "10004_Ann Lee_f_29.jpg")
    copy_face(wiki[4], root / "female" / "10005_Bob_male_40.jpg")  # contradicts its folder
    copy_face(wiki[5], root / "male" / "portrait.jpg")  # malformed
    copy_face(wiki[6], root / "male" / "10007_Carl_1_22.jpg")  # numeric code: the folder decides
    assert detect_kind(root) == "prototype"
    data = load_dataset(root)
    got = sorted(((r.identity, r.gender, r.age) for r in data), key=lambda t: (t[0], t[2] or 0))
    assert got == [
        ("Ann Lee", "female", None),
        ("Ann Lee", "female", 29),
        ("Carl", "male", 22),
        ("John_Smith", "male", 34),
        ("John_Smith", "male", 51),
    ]
    assert data.skipped == Counter({"gender_mismatch": 1, "malformed_name": 1})
    assert all(r.source == "prototype" and readable(r.path) for r in data)


def test_unknown_layout_and_kind(tmp_path):
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(DatasetError, match="cannot tell"):
        load_dataset(tmp_path)
    with pytest.raises(DatasetError, match="unknown dataset kind"):
        load_dataset(tmp_path, "celeba")
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(tmp_path / "missing")


# --- splits ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_records() -> list[FaceRecord]:
    return load_dataset(FACES).records


def with_identities(records: list[FaceRecord], people: int, seed: int = 1) -> list[FaceRecord]:
    """Real records where the wiki ones are given names: several photos per person."""
    rng = np.random.default_rng(seed)
    out = []
    for r in records:
        if r.source == "wiki":
            r = FaceRecord(r.path, r.gender, r.age, r.race, r.source, f"person{rng.integers(people)}")
        out.append(r)
    return out


def test_split_is_identity_disjoint(shared_records):
    records = with_identities(shared_records[::5], people=800)
    train, val = split_records(records, 0.2, seed=3)
    assert len(train) + len(val) == len(records)
    train_ids = {r.identity for r in train if r.identity}
    val_ids = {r.identity for r in val if r.identity}
    assert train_ids and val_ids and not train_ids & val_ids
    assert abs(len(val) / len(records) - 0.2) < 0.02


def test_split_is_stratified(shared_records):
    records = shared_records[::3]
    train, val = split_records(records, 0.1, seed=0)
    assert abs(len(val) / len(records) - 0.1) < 0.002
    whole = Counter((r.source, r.gender, None if r.age is None else r.age // 10) for r in records)
    held = Counter((r.source, r.gender, None if r.age is None else r.age // 10) for r in val)
    for key, n in whole.items():
        if n >= 100:
            assert abs(held[key] / n - 0.1) < 0.02, key


def test_split_is_deterministic(shared_records):
    records = with_identities(shared_records[::7], people=300)
    a = split_records(records, 0.15, seed=11)
    b = split_records(records, 0.15, seed=11)
    assert a == b
    # the order the records come in does not matter
    shuffled = list(records)
    np.random.default_rng(5).shuffle(shuffled)
    c = split_records(shuffled, 0.15, seed=11)
    assert set(c.val) == set(a.val)
    # and another seed gives another split
    d = split_records(records, 0.15, seed=12)
    assert set(d.val) != set(a.val)


def test_split_keeps_tiny_sets_and_checks_fraction():
    records = [FaceRecord(Path(f"{i}.jpg"), "male", 30, None, "x", None) for i in range(10)]
    train, val = split_records(records, 0.3, seed=0)
    assert len(val) == 3 and len(train) == 7
    with pytest.raises(ValueError):
        split_records(records, 1.0)
