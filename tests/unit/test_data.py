"""Loaders on fixtures written to each documented format, the real shared data, bad-data errors."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from doktra_tune.data import Example, label_matrix, load_split, stratified_subsample
from doktra_tune.errors import ConfigError, DataError
from doktra_tune.tasks import HOC_LABELS, get_task


def _counts(examples):
    return Counter(ex.labels[0] for ex in examples)


# --------------------------------------------------------------------------- fixtures per loader


def test_blue_tsv_with_header(fixtures_dir):
    train = load_split("ddi", "train", fixtures_dir / "blue_ddi")
    assert len(train) == 6
    assert train[0] == Example("@DRUG$ should not be combined with @DRUG$ .", ("DDI-advise",), None)
    assert [ex.labels[0] for ex in train] == [
        "DDI-advise", "DDI-effect", "DDI-int", "DDI-mechanism", "DDI-false", "DDI-false"
    ]
    assert label_matrix("ddi", train).tolist() == [0, 1, 2, 3, 4, 4]
    assert label_matrix("ddi", train).dtype == np.int64
    assert len(load_split("ddi", "dev", fixtures_dir / "blue_ddi")) == 2


def test_blue_tsv_without_header(fixtures_dir):
    test = load_split("i2b2", "test", fixtures_dir / "blue_i2b2")
    assert [ex.labels for ex in test] == [("TrAP",), ("TeRP",), ("PIP",), ("false",)]
    assert test[1].text == "@TEST$ revealed @PROBLEM$ ."


def test_blue_tsv_hoc_multi_label(fixtures_dir):
    train = load_split("hoc", "train", fixtures_dir / "blue_hoc")
    assert [ex.labels for ex in train] == [
        ("sustaining proliferative signaling",),
        ("resisting cell death", "sustaining proliferative signaling"),
        (),
        ("activating invasion and metastasis",),
    ]
    assert [ex.doc_id for ex in train] == ["1001", "1001", "1002", "1002"]
    matrix = label_matrix("hoc", train)
    assert matrix.dtype == np.float32 and matrix.shape == (4, 10)
    assert matrix.sum(axis=1).tolist() == [1.0, 2.0, 0.0, 1.0]
    assert matrix[1, 7] == 1.0 and matrix[1, 8] == 1.0
    dev = load_split("hoc", "dev", fixtures_dir / "blue_hoc")
    assert dev[0].labels == ("resisting cell death", "tumor promoting inflammation")
    assert dev[1].labels == () and dev[1].doc_id == "2001"


def test_blue_tsv_hoc_without_header(fixtures_dir):
    test = load_split("hoc", "test", fixtures_dir / "blue_hoc_noheader")
    assert [ex.labels for ex in test] == [
        ("genomic instability and mutation", "tumor promoting inflammation"),
        (),
    ]
    assert [ex.doc_id for ex in test] == ["4001", "4001"]
    assert test[0].text == "DNA damage fuels inflammation ."


def test_gad_folds_dev_is_the_folds_test_file_by_default(fixtures_dir):
    """The paper's GAD (Table 1: 4796 train / no dev / 534 test): the whole train file is trained and
    dev is the fold's test file, as the authors' scripts read GAD's dev.tsv."""
    root = fixtures_dir / "gad"
    train = load_split("gad", "train", root)  # default format gad_folds:1, dev mode test
    dev = load_split("gad", "dev", root)
    test = load_split("gad", "test", root)
    assert len(train) == 20 and _counts(train) == {"0": 10, "1": 10}
    assert dev == test and len(test) == 2 and test[0].labels == ("1",)
    assert load_split("gad", "train", root, data_format="gad_folds:1:test") == train
    assert load_split("gad", "dev", root, data_format="gad_folds:1:test") == dev


def test_gad_folds_carve_holds_out_a_stratified_dev(fixtures_dir):
    root = fixtures_dir / "gad"
    train = load_split("gad", "train", root, data_format="gad_folds:1:carve")
    dev = load_split("gad", "dev", root, data_format="gad_folds:1:carve")
    test = load_split("gad", "test", root, data_format="gad_folds:1:carve")
    # 10 x "1" and 10 x "0": 10 % of each class -> 1 + 1 dev examples
    assert len(train) == 18 and len(dev) == 2 and len(test) == 2
    assert _counts(dev) == {"0": 1, "1": 1} and _counts(train) == {"0": 9, "1": 9}
    assert not {ex.text for ex in dev} & {ex.text for ex in train}
    assert load_split("gad", "dev", root, data_format="gad_folds:1:carve") == dev  # fixed split seed
    assert test == load_split("gad", "test", root)


def test_gad_fold_formats_keep_the_dev_mode():
    from doktra_tune.data import gad_fold_format, parse_gad_format

    assert parse_gad_format("") == ("1", "test") and parse_gad_format("4:carve") == ("4", "carve")
    assert gad_fold_format("gad_folds:1:carve", 7) == "gad_folds:7:carve"
    assert gad_fold_format("gad_folds:1", 2) == gad_fold_format(None, 2) == "gad_folds:2:test"
    with pytest.raises(ConfigError, match="GAD dev 'holdout' is unknown; use gad_folds:<k>:test") as err:
        parse_gad_format("1:holdout")
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="final.folds needs GAD's folds"):
        gad_fold_format("blue_tsv", 1)


def test_gad_missing_fold_and_bad_fold(fixtures_dir):
    with pytest.raises(DataError, match=r"missing GAD fold directory .*gad[/\\]3; .*gad_folds:<k>"):
        load_split("gad", "test", fixtures_dir / "gad", data_format="gad_folds:3")
    with pytest.raises(ConfigError, match="1..10"):
        load_split("gad", "test", fixtures_dir / "gad", data_format="gad_folds:11")


def test_blue_chemprot_the_paper_preset_reads(fixtures_dir):
    """BLUE's ChemProt (the paper preset's copy, `blue_tsv`): the five CPR groups and the false class,
    entities anonymised; micro-F1 leaves false out (metrics: micro_f1_positive)."""
    root = fixtures_dir / "blue_chemprot"
    train = load_split("chemprot", "train", root, data_format="blue_tsv")
    assert [ex.labels[0] for ex in train] == ["CPR:3", "CPR:4", "CPR:5", "CPR:6", "CPR:9", "false", "false"]
    assert train[1] == Example("@CHEMICAL$ inhibits @GENE$ activity .", ("CPR:4",), None)
    assert label_matrix("chemprot", train).tolist() == [0, 1, 2, 3, 4, 5, 5]
    assert [ex.labels[0] for ex in load_split("chemprot", "dev", root, data_format="blue_tsv")] == ["CPR:3", "false"]
    assert [ex.labels[0] for ex in load_split("chemprot", "test", root, data_format="blue_tsv")] == [
        "CPR:9", "false", "CPR:6"]
    task = get_task("chemprot")
    assert task.negative_labels == ("false",) and task.positive_labels == ("CPR:3", "CPR:4", "CPR:5", "CPR:6", "CPR:9")


def test_chemprot_jsonl_maps_fine_labels_to_cpr_groups(fixtures_dir):
    train = load_split("chemprot", "train", fixtures_dir / "chemprot_jsonl")
    assert [ex.labels[0] for ex in train] == [
        "CPR:4", "CPR:3", "CPR:5", "CPR:6", "CPR:9", "CPR:4", "CPR:9", "CPR:5"
    ]
    assert train[0].text == "<< chemical0 >> acts on [[ protein0 ]] ."
    dev = load_split("chemprot", "dev", fixtures_dir / "chemprot_jsonl")
    assert [ex.labels[0] for ex in dev] == ["CPR:3", "CPR:9"]
    test = load_split("chemprot", "test", fixtures_dir / "chemprot_jsonl")
    assert [ex.labels[0] for ex in test] == ["CPR:4", "CPR:5", "CPR:3"]


def test_fpb_csv_split_80_10_10(fixtures_dir):
    root = fixtures_dir / "fpb"  # 10 neutral, 6 positive, 4 negative; latin-1 header result,content
    splits = {s: load_split("fpb", s, root) for s in ("train", "dev", "test")}
    # per class round(0.1 n): neutral 1, positive round(0.6)=1, negative round(0.4)=0
    assert _counts(splits["test"]) == {"neutral": 1, "positive": 1}
    assert _counts(splits["dev"]) == {"neutral": 1, "positive": 1}
    assert _counts(splits["train"]) == {"neutral": 8, "positive": 4, "negative": 4}
    texts = [ex.text for s in splits.values() for ex in s]
    assert len(texts) == len(set(texts)) == 20
    assert any("Sodankylä" in t for t in texts)  # latin-1 decoded


def test_fpb_original_txt_format(fixtures_dir):
    csv_all = sorted(ex.text for s in ("train", "dev", "test") for ex in load_split("fpb", s, fixtures_dir / "fpb"))
    txt_root = fixtures_dir / "fpb_txt"
    txt_all = sorted(
        ex.text
        for s in ("train", "dev", "test")
        for ex in load_split("fpb", s, txt_root, data_format="fpb:Sentences_AllAgree.txt")
    )
    assert csv_all == txt_all
    # same rows in the same order -> the same seeded split
    assert load_split("fpb", "test", txt_root, data_format="fpb:Sentences_AllAgree.txt") == load_split(
        "fpb", "test", fixtures_dir / "fpb"
    )


def test_fts_csv_holdout(fixtures_dir):
    splits = {s: load_split("fts", s, fixtures_dir / "fts") for s in ("train", "dev", "test")}
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [24, 3, 3]
    assert _counts(splits["test"]) == {"negative": 1, "neutral": 1, "positive": 1}


def test_hoc_raw_corpus(fixtures_dir):
    root = fixtures_dir / "hoc_raw"
    # 3 abstracts in BLUE's proportions: round(3*1108/1580)=2 train, round(3*157/1580)=0 dev, 1 test
    train = load_split("hoc", "train", root, data_format="hoc_raw")
    test = load_split("hoc", "test", root, data_format="hoc_raw")
    docs = {ex.doc_id for ex in train} | {ex.doc_id for ex in test}
    assert docs == {"111", "222", "333"} and len(train) + len(test) == 6
    by_text = {ex.text: ex for ex in train + test}
    assert by_text["Sentence one about receptors ."].labels == ("sustaining proliferative signaling",)
    assert by_text["Apoptosis and inflammation ."].labels == ("resisting cell death", "tumor promoting inflammation")
    assert by_text["Nothing here ."].labels == ()
    assert by_text["Immortal cells ."].labels == ("enabling replicative immortality",)
    with pytest.raises(DataError, match="dev split of hoc is empty"):
        load_split("hoc", "dev", root, data_format="hoc_raw")


def test_hf_local_folder(fixtures_dir):
    fmt = "hf:hf_local?text_column=sentence&label_column=label"
    train = load_split("fpb", "train", fixtures_dir, data_format=fmt)
    assert train == [
        Example("Shares rose , analysts said .", ("positive",)),
        Example("Results were flat .", ("neutral",)),
        Example("Losses widened .", ("negative",)),
    ]
    assert load_split("fpb", "dev", fixtures_dir / "hf_local", data_format="hf:?text_column=sentence") == [
        Example("Profit doubled .", ("positive",))
    ]
    assert load_split("fpb", "test", fixtures_dir, data_format=fmt)[0].labels == ("negative",)


def test_hf_missing_column_and_offline_hub(fixtures_dir, monkeypatch):
    with pytest.raises(DataError, match=r"train.csv: no column 'text' \(columns: sentence, label\)"):
        load_split("fpb", "train", fixtures_dir / "hf_local", data_format="hf:")
    import datasets

    # offline on purpose: the error under test is the one `datasets` gives with the hub switched off
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConfigError) as err:
        load_split("fpb", "test", fixtures_dir, data_format="hf:no-such-org/no-such-dataset")
    assert "\n" not in str(err.value) and "offline" in str(err.value)


def test_unknown_format_and_split(fixtures_dir):
    with pytest.raises(ConfigError, match="unknown data format 'xml'.*blue_tsv"):
        load_split("ddi", "train", fixtures_dir / "blue_ddi", data_format="xml")
    with pytest.raises(ConfigError, match="unknown split 'valid'"):
        load_split("ddi", "valid", fixtures_dir / "blue_ddi")
    with pytest.raises(DataError, match="does not exist; set data.data_dir"):
        load_split("ddi", "train", fixtures_dir / "nope")


# --------------------------------------------------------------------------- bad data


def _one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg and "; " in msg
    return msg


_GOOD_CHEMPROT_LINE = json.dumps({"text": "<< a >> [[ b ]]", "label": "INHIBITOR", "metadata": []})


@pytest.mark.parametrize(
    ("task", "split", "name", "content", "expected"),
    [
        pytest.param("ddi", "test", "train.tsv", "index\tsentence\tlabel\n0\tx\tDDI-false\n",
                     "missing test split file {path}", id="missing-split-file"),
        pytest.param("chemprot", "dev", "dev.jsonl", "\n", "{path}:1: file is empty", id="empty-file"),
        pytest.param("ddi", "dev", "dev.tsv", "index\tsentence\tlabel\n", "{path}:1: no data rows",
                     id="header-only-tsv"),
        pytest.param("ddi", "train", "train.tsv",
                     "index\tsentence\tlabel\n0\tfine row\tDDI-int\n1\tbroken\trow\tDDI-int\n",
                     "{path}:3: expected 3 tab-separated columns", id="wrong-column-count"),
        pytest.param("ddi", "train", "train.tsv", "index\tsentence\tlabel\n0\ta\tDDI-int\n1\tb\tCPR:3\n",
                     "{path}:3: label 'CPR:3' is not in the ddi label set", id="label-outside-the-task"),
        pytest.param("chemprot", "train", "train.jsonl", _GOOD_CHEMPROT_LINE + "\n" + '{"text": "x", "label": \n',
                     "{path}:2: bad JSON", id="bad-json-line"),
        pytest.param("chemprot", "test", "test.jsonl", json.dumps({"text": "t", "label": "COFACTOR"}) + "\n",
                     "{path}:1: label 'COFACTOR'", id="unknown-chemprot-label"),
    ],
)
def test_bad_file_is_one_line_naming_it(tmp_path, task, split, name, content, expected):
    """`name` holds `content`; the error names the split's file (`<split>.<name's suffix>`) as `expected`."""
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError) as err:
        load_split(task, split, tmp_path)
    path = tmp_path / f"{split}{Path(name).suffix}"
    assert expected.format(path=path) in _one_line(err)


def test_bad_csv_rows(tmp_path):
    (tmp_path / "all-data.csv").write_text("neutral,ok\npositive,too,many\n")
    with pytest.raises(DataError) as err:
        load_split("fpb", "train", tmp_path)
    assert f"{tmp_path / 'all-data.csv'}:2: expected 2 comma-separated columns" in _one_line(err)
    (tmp_path / "all-data.csv").write_text("neutral,ok\nbullish,up\n")
    with pytest.raises(DataError) as err:
        load_split("fpb", "train", tmp_path)
    assert f"{tmp_path / 'all-data.csv'}:2: label 'bullish' is not in the fpb label set" in _one_line(err)


def test_hoc_raw_misaligned_labels(tmp_path, fixtures_dir):
    root = tmp_path / "hoc"
    shutil.copytree(fixtures_dir / "hoc_raw", root)
    (root / "labels" / "111.txt").write_text("<Resisting cell death\n")  # 1 field, 2 sentences
    with pytest.raises(DataError) as err:
        for split in ("train", "test"):
            load_split("hoc", split, root, data_format="hoc_raw")
    assert f"{root / 'labels' / '111.txt'}:1: 1 label fields for 2 sentences" in _one_line(err)


# --------------------------------------------------------------------------- subsampling


def test_stratified_subsample_is_deterministic_and_proportional(fixtures_dir):
    examples = load_split("fts", "train", fixtures_dir / "fts")  # 8 per class
    first = load_split("fts", "train", fixtures_dir / "fts", limit=12, seed=3)
    assert first == load_split("fts", "train", fixtures_dir / "fts", limit=12, seed=3)
    assert _counts(first) == {"negative": 4, "neutral": 4, "positive": 4}
    assert first != load_split("fts", "train", fixtures_dir / "fts", limit=12, seed=4)
    # input order kept
    positions = [examples.index(ex) for ex in first]
    assert positions == sorted(positions)
    # largest remainder: 7 of (8, 8, 8) -> 7/3 each = 2.33 -> 2,2,2 + 1 to the first-listed tie
    assert sorted(_counts(stratified_subsample(examples, 7, 0)).values()) == [2, 2, 3]
    assert load_split("fts", "train", fixtures_dir / "fts", limit=1000) == examples
    with pytest.raises(ConfigError):
        stratified_subsample(examples, 0, 0)


# --------------------------------------------------------------------------- real shared data


def test_real_chemprot_counts_and_mapping(data_root):
    root = data_root / "chemprot_scibert"
    sizes = {s: len(load_split("chemprot", s, root)) for s in ("train", "dev", "test")}
    assert sizes == {"train": 4169, "dev": 2427, "test": 3469}
    train = load_split("chemprot", "train", root)
    # README label counts: CPR:3 = 67+323+387, CPR:4 = 131+1642+487, CPR:5 = 156+10+4,
    # CPR:6 = 235, CPR:9 = 480+233+14
    assert _counts(train) == {"CPR:3": 777, "CPR:4": 2260, "CPR:5": 170, "CPR:6": 235, "CPR:9": 727}
    limited = load_split("chemprot", "train", root, limit=100, seed=0)
    assert len(limited) == 100
    # 100 * (777, 2260, 170, 235, 727) / 4169 = 18.6, 54.2, 4.1, 5.6, 17.4 -> largest remainder
    assert _counts(limited) == {"CPR:3": 19, "CPR:4": 54, "CPR:5": 4, "CPR:6": 6, "CPR:9": 17}


def test_real_fpb_split_sizes_and_stratification(data_root):
    root = data_root / "fpb"
    splits = {s: load_split("fpb", s, root) for s in ("train", "dev", "test")}
    # neutral 2879, positive 1363, negative 604: round(10 %) = 288, 136, 60 per held-out split
    assert _counts(splits["test"]) == {"neutral": 288, "positive": 136, "negative": 60}
    assert _counts(splits["dev"]) == {"neutral": 288, "positive": 136, "negative": 60}
    assert _counts(splits["train"]) == {"neutral": 2303, "positive": 1091, "negative": 484}
    assert sum(len(s) for s in splits.values()) == 4846
    texts = {s: {ex.text for ex in exs} for s, exs in splits.items()}
    assert not (texts["test"] & texts["dev"])


def test_real_hoc_raw_split_by_abstract(data_root):
    root = data_root / "hoc_raw"
    splits = {s: load_split("hoc", s, root, data_format="hoc_raw") for s in ("train", "dev", "test")}
    docs = {s: {ex.doc_id for ex in exs} for s, exs in splits.items()}
    # 1852 abstracts in BLUE's 1108/157/315 proportions: 1299 / 184 / 369
    assert [len(docs[s]) for s in ("train", "dev", "test")] == [1299, 184, 369]
    assert not (docs["train"] & docs["dev"]) and not (docs["train"] & docs["test"])
    assert sum(len(s) for s in splits.values()) == 17464
    assert set(HOC_LABELS) == {label for ex in splits["train"] for label in ex.labels}
    assert label_matrix(get_task("hoc"), splits["dev"]).shape == (len(splits["dev"]), 10)


def test_utf8_bom_and_bad_encoding(tmp_path):
    (tmp_path / "train.tsv").write_bytes(
        "index\tsentence\tlabels\n7_1\tCells divide .\tsustaining proliferative signaling\n".encode("utf-8-sig")
    )
    assert load_split("hoc", "train", tmp_path)[0].doc_id == "7"
    (tmp_path / "dev.tsv").write_bytes(b"index\tsentence\tlabel\n0\tok\t\n1\tbad \xff byte\t\n")
    with pytest.raises(DataError) as err:
        load_split("hoc", "dev", tmp_path)
    assert f"{tmp_path / 'dev.tsv'}:3: not valid utf-8 text" in _one_line(err)


def test_hf_hub_dataset_unreachable_is_one_fast_line(fixtures_dir, monkeypatch):
    """A user's shell (hub not switched off) with no reachable hub: one line naming the dataset and
    the fix, without `datasets`' half a minute of retries."""
    import socket
    import time

    import datasets
    from huggingface_hub import constants

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as err:
        load_split("fpb", "test", fixtures_dir, data_format="hf:no-such-org/no-such-dataset")
    message = str(err.value)
    assert time.monotonic() - t0 < 15
    assert "\n" not in message and "'no-such-org/no-such-dataset'" in message
    assert f"cannot be downloaded from http://127.0.0.1:{port}" in message and "HF_DATASETS_OFFLINE=1" in message
