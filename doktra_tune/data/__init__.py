"""Loading the task datasets into `Example`s (the data contract of docs/DESIGN.md).

`load_split(task, split, data_dir, data_format=..., limit=..., seed=...)` picks a loader by the
format name (`DataConfig.data_format`, default: the task's `default_format`):

  blue_tsv                 BLUE TSVs `<data_dir>/{train,dev,test}.tsv`, header `index<TAB>sentence
                           <TAB>label` (columns found by name, any order; or no header: `index,
                           sentence, label` / `sentence, label`). Multi-label (HoC): the `labels`
                           cell is comma separated, either label names (BLUE_Benchmark) or
                           bluebert's `<i>_<0|1>` pairs (i indexes `TaskSpec.labels`); `index` is
                           `<PMID>_<n>` and its PMID becomes `Example.doc_id`.
  gad_folds[:k[:dev]]      BioBERT's GAD: `<data_dir>/<k>/train.tsv` (no header, sentence, label)
                           and `<data_dir>/<k>/test.tsv` (header index, sentence, label); k = 1..10,
                           default 1 (Table 4 uses the first fold). No dev split ships (Table 1: GAD
                           4796 / - / 534): dev `test` (default) is the fold's test file, as the
                           authors' scripts read GAD's dev.tsv in that file's layout, and the whole
                           train file is trained; dev `carve` is a stratified 10 % of the fold's
                           train file (fixed seed `SPLIT_SEED`), the other 90 % the train split.
  chemprot_jsonl           SciBERT's ChemProt `<data_dir>/{train,dev,test}.jsonl`, lines
                           `{"text", "label", "metadata"}`; the 13 fine labels are grouped into BLUE's
                           CPR:3/4/5/6/9 (`CHEMPROT_FINE_TO_CPR`); text kept verbatim (the `<< >>` /
                           `[[ ]]` entity markers stay, they are not BLUE's @CHEMICAL$/@GENE$).
  fpb[:file]               Financial PhraseBank: `all-data.csv` (`label,sentence`, header optional,
                           latin-1) or the original `Sentences_*.txt` (`sentence@label`, latin-1).
  csv_holdout:file         any `label,sentence` CSV (FinTextSen after clustering its scores).
                           fpb and csv_holdout ship no splits; following §4.7 a stratified 10 % is the
                           test split, and a further stratified 10 % (of all examples) is carved from
                           the rest as dev: 80 / 10 / 10, fixed seed `SPLIT_SEED`.
  hoc_raw                  the HoC corpus as its authors publish it (`text/<PMID>.txt`,
                           `labels/<PMID>.txt`); first-level hallmark of every label path; split by
                           abstract in BLUE's proportions 1108 / 157 / 315 (fixed seed `SPLIT_SEED`).
  hf:<source>[?text_column=c&label_column=c]
                           `datasets.load_dataset`: <source> is a hub id, or a local folder (relative
                           to data_dir; empty = data_dir) holding `<split>.{csv,tsv,json,jsonl,parquet}`.

Every problem with the files is a one-line `DataError` naming the file (and line).

Layout: `registry` (`load_split`, `parse_format`, `_LOADERS`), one module per format family
(`blue_tsv`, `chemprot_jsonl`, `sentiment`, `hoc_raw`, `hf_datasets`), and what they share:
`examples` (`Example`, `MissingDataError`, digests), `files` (reading files and rows), `labels`
(label checks and parsing, `label_matrix`), `splits` (stratified subsample and holdout, carved splits).
"""

from doktra_tune.data.blue_tsv import GAD_DEV_MODES, gad_fold_format, parse_gad_format, read_tsv
from doktra_tune.data.chemprot_jsonl import CHEMPROT_FINE_TO_CPR
from doktra_tune.data.examples import Example, MissingDataError, label_counts, split_digest
from doktra_tune.data.hoc_raw import HOC_BLUE_DOCS
from doktra_tune.data.labels import label_matrix
from doktra_tune.data.registry import SPLITS, load_split, parse_format
from doktra_tune.data.sentiment import read_sentiment_file
from doktra_tune.data.splits import (
    HOLDOUT_FRACTION,
    SPLIT_SEED,
    holdout_splits,
    stratified_holdout,
    stratified_subsample,
)

__all__ = [
    "CHEMPROT_FINE_TO_CPR",
    "GAD_DEV_MODES",
    "HOC_BLUE_DOCS",
    "HOLDOUT_FRACTION",
    "SPLITS",
    "SPLIT_SEED",
    "Example",
    "MissingDataError",
    "holdout_splits",
    "label_counts",
    "gad_fold_format",
    "label_matrix",
    "load_split",
    "parse_format",
    "parse_gad_format",
    "read_sentiment_file",
    "read_tsv",
    "split_digest",
    "stratified_holdout",
    "stratified_subsample",
]
