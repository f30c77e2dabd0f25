"""The hub path, through the real `huggingface_hub` code against a local endpoint (tests/helpers/hub_server.py)
holding the paper's model ids as small random models: the preflight downloads each model once (a
progress bar), trials read only the cache, a second search downloads nothing, and an unknown, a gated
or an unreachable model is one `error:` line and exit 2 before Ray starts.

The CLI and `fetch_model` run in subprocesses with a user's environment (PATH, HOME, HF_ENDPOINT,
HF_HOME): `huggingface_hub` reads HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE once, at import.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from tests.helpers.hub_server import (
    IGNORED_FILE,
    PAPER_MODEL_IDS,
    LocalHub,
    build_repos,
)
from tests.helpers.search import DATA_ROOT, free_port

RAY_TMP = Path("/tmp/ray")  # where a local Ray keeps its sessions when RAY_TMPDIR is unset (a user's shell)
TEACHER, STUDENT = "dmis-lab/biobert-base-cased-v1.1", "albert-xlarge-v2"
GATED = "roberta-large"
FAMILY_TOKENIZER = {"bert": "BertTokenizer", "albert": "AlbertTokenizer", "roberta": "RobertaTokenizer"}
needs_data = pytest.mark.skipif(not (DATA_ROOT / "chemprot_scibert").is_dir(),
                                reason=f"no ChemProt data at {DATA_ROOT}")


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_repos(tmp_path_factory.mktemp("hub-repos"))


def user_env(home: Path, endpoint: str) -> dict[str, str]:
    """A user's shell: PATH and HOME, no HF_*_OFFLINE or DOKTRA_* variables; the hub is `endpoint`
    and the Hugging Face cache lives under HOME."""
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "HF_ENDPOINT": endpoint, "HF_HOME": str(home / "hf")}
    if "TZ" in os.environ:  # Ray names its session in local time: read it in this process's zone
        env["TZ"] = os.environ["TZ"]
    home.mkdir(parents=True, exist_ok=True)
    return env


def served_files(folder: Path) -> set[str]:
    """The files of a repo that fetch_model downloads (all but the other framework's weights)."""
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {IGNORED_FILE}


def downloads(hub: LocalHub) -> Counter[tuple[str, str]]:
    """(repo id, file) -> how many times its contents were sent."""
    counts: Counter[tuple[str, str]] = Counter()
    for request in hub.file_downloads():
        repo_id, _, rest = request.path.lstrip("/").partition("/resolve/")
        counts[(repo_id, rest.split("/", 1)[1])] += 1
    return counts


@dataclass(frozen=True)
class Ran:
    """A finished subprocess: exit status, output, pid and when it ran (time.time())."""

    returncode: int
    stdout: str
    stderr: str
    pid: int
    start: float
    end: float


def run(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float) -> Ran:
    """`cmd` to its end. On a timeout the driver gets SIGINT first, so that it shuts its Ray down."""
    start = time.time()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=60)
        finally:
            proc.kill()
            proc.communicate()
        pytest.fail(f"{' '.join(cmd[2:])} ran past {timeout} s")
    return Ran(proc.returncode, out, err, proc.pid, start, time.time())


def ray_start(ran: Ran) -> float | None:
    """When the local Ray of the driver `ran` started: the time in its session's name
    (session_<date>_<time>_<us>_<driver pid>); None when it started none."""
    times = []
    for session in RAY_TMP.glob(f"session_*_{ran.pid}"):
        stamp = datetime.strptime("_".join(session.name.split("_")[1:4]), "%Y-%m-%d_%H-%M-%S_%f").timestamp()
        if ran.start - 1 <= stamp <= ran.end + 1:
            times.append(stamp)
    assert len(times) <= 1, f"several Ray sessions for driver {ran.pid}"
    return times[0] if times else None


def search_cmd(runs_root: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "doktra_tune.search", "task=chemprot", "preset=tiny", f"runs_root={runs_root}",
            f"data_root={DATA_ROOT}", *overrides]


def test_local_hub_answers_as_the_hub_does(repos, tmp_path, monkeypatch) -> None:
    from huggingface_hub import (
        HfApi,
        constants,
        get_hf_file_metadata,
        hf_hub_download,
        hf_hub_url,
    )
    from huggingface_hub.errors import (
        GatedRepoError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    with LocalHub({TEACHER: repos[TEACHER], GATED: repos[GATED]}, gated=[GATED]) as hub:
        # what HF_ENDPOINT does at import, so that huggingface_hub's own look-ups (its agent registry) come here too
        monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(tmp_path / "agent_harnesses.json"))
        api = HfApi(endpoint=hub.endpoint)
        info = api.model_info(TEACHER)
        files = {p.name for p in repos[TEACHER].iterdir()}
        assert len(info.sha) == 40 and {s.rfilename for s in info.siblings} == files
        assert api.model_info(TEACHER, revision=info.sha).sha == info.sha
        assert {f.path for f in api.list_repo_tree(TEACHER, revision=info.sha)} == files
        weights = (repos[TEACHER] / "model.safetensors").read_bytes()
        meta = get_hf_file_metadata(hf_hub_url(TEACHER, "model.safetensors", endpoint=hub.endpoint))
        assert meta.commit_hash == info.sha and meta.size == len(weights) and meta.xet_file_data is None
        path = hf_hub_download(TEACHER, "config.json", endpoint=hub.endpoint, cache_dir=tmp_path / "cache")
        assert Path(path).read_bytes() == (repos[TEACHER] / "config.json").read_bytes()
        ranged = urllib.request.Request(hf_hub_url(TEACHER, "model.safetensors", endpoint=hub.endpoint),
                                        headers={"Range": "bytes=100-"})
        with urllib.request.urlopen(ranged) as response:
            assert response.status == 206 and response.read() == weights[100:]

        assert api.model_info(GATED).gated == "manual"  # public metadata, as on the hub; its files need a login
        with pytest.raises(GatedRepoError):
            hf_hub_download(GATED, "config.json", endpoint=hub.endpoint, cache_dir=tmp_path / "cache")
        with pytest.raises(RepositoryNotFoundError) as unknown:
            api.model_info("no-such-org/no-such-model")
        assert unknown.value.response.status_code == 404
        with pytest.raises(RevisionNotFoundError):
            api.model_info(TEACHER, revision="v9")
        with pytest.raises(RemoteEntryNotFoundError):
            hf_hub_download(TEACHER, "nope.bin", endpoint=hub.endpoint, cache_dir=tmp_path / "cache")
    statuses = Counter((r.method, r.status) for r in hub.requests)
    assert statuses[("HEAD", 401)] == 1 and statuses[("GET", 404)] == 2 and statuses[("HEAD", 404)] == 1
    assert [r.path for r in hub.file_downloads()] == [f"/{TEACHER}/resolve/main/config.json",
                                                       f"/{TEACHER}/resolve/main/model.safetensors"]


FETCH = """
import json, sys
from doktra_tune.models import fetch_model
ids = sys.argv[1:]
print(json.dumps([fetch_model(i) for i in ids] + [fetch_model(i) for i in ids]))  # the second round: all cached
"""

LOAD = """
import json, sys, tempfile
import torch
from doktra_tune.data import Example
from doktra_tune.encoding import collate, encode_split
from doktra_tune.models import fetch_model, forward_cls_logits, load_classifier, max_positions
examples = [Example("@CHEMICAL$ inhibits the expression of @GENE$ in human cells .", ("CPR:4",)),
            Example("No relation is stated here .", ("false",))]
out = {}
for repo_id in sys.argv[1:]:
    assert fetch_model(repo_id) == repo_id  # offline: found in the cache
    model, tokenizer = load_classifier(repo_id, "chemprot", seed=0)
    encoded = encode_split(examples, "chemprot", tokenizer, max_len=128, cache_dir=tempfile.mkdtemp(), cache_key="hub")
    with torch.no_grad():
        cls, logits = forward_cls_logits(model, collate(encoded, [0, 1], tokenizer.pad_token_id))
    ids = encoded.input_ids[0]
    out[repo_id] = {"model_type": model.config.model_type, "tokenizer": type(tokenizer).__name__,
                    "max_positions": max_positions(repo_id), "cls": list(cls.shape), "logits": list(logits.shape),
                    "finite": bool(torch.isfinite(logits).all()), "tokens": len(ids),
                    "framed": ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id}
print(json.dumps(out))
"""


def test_fetch_model_downloads_each_paper_model_once_and_the_trials_load_it_offline(repos, tmp_path) -> None:
    from doktra_tune.cluster.ray_session import WORKER_ENV

    ids = list(PAPER_MODEL_IDS)
    with LocalHub(repos) as hub:
        env = user_env(tmp_path / "home", hub.endpoint)
        fetched = run([sys.executable, "-c", FETCH, *ids], env, tmp_path, timeout=300)
        assert fetched.returncode == 0, fetched.stderr
        assert json.loads(fetched.stdout) == ids + ids
        assert "Fetching" in fetched.stderr  # snapshot_download's progress bar
        assert downloads(hub) == Counter({(i, f): 1 for i in ids for f in served_files(repos[i])})
        assert not [r for r in hub.requests if IGNORED_FILE in r.path]
        assert not [r for r in hub.requests if r.status >= 400]
        cache = Path(env["HF_HOME"]) / "hub"
        for repo_id in ids:
            folder = cache / f"models--{repo_id.replace('/', '--')}"
            snapshot = folder / "snapshots" / (folder / "refs" / "main").read_text()
            assert {p.name for p in snapshot.iterdir()} == served_files(repos[repo_id])

        # the trials' environment (ray_session.WORKER_ENV: the hub switched off): the cache alone
        served = len(hub.requests)
        loaded = run([sys.executable, "-c", LOAD, *ids], {**env, **WORKER_ENV}, tmp_path, timeout=300)
        assert loaded.returncode == 0, loaded.stderr
        assert len(hub.requests) == served
    report = json.loads(loaded.stdout)
    for repo_id, family in PAPER_MODEL_IDS.items():
        assert 10 <= report[repo_id].pop("tokens") <= 128  # the first sentence, [CLS] ... [SEP] (or <s> ... </s>)
        assert report[repo_id] == {"model_type": family, "tokenizer": FAMILY_TOKENIZER[family], "max_positions": 512,
                                   "cls": [2, 32], "logits": [2, 6], "finite": True, "framed": True}


@pytest.mark.slow
@needs_data
def test_search_downloads_before_ray_and_a_second_search_downloads_nothing(repos, tmp_path) -> None:
    home = tmp_path / "home"
    overrides = (f"teacher_model={TEACHER}", f"student_model={STUDENT}", "search.stop_after=ctt",
                 "stages.ctt.grid.beta=[0.0]")
    with LocalHub({TEACHER: repos[TEACHER], STUDENT: repos[STUDENT]}) as hub:
        env = user_env(home, hub.endpoint)
        first = run(search_cmd(tmp_path / "runs1", *overrides), env, home, timeout=540)
        assert first.returncode == 0, first.stderr[-3000:]
        assert "Traceback" not in first.stderr and "[ctt] end" in first.stdout
        assert f"calibrated teacher {TEACHER}" in first.stdout
        assert "Fetching" in first.stderr  # the preflight's progress bar
        wanted = Counter({(i, f): 1 for i in (TEACHER, STUDENT) for f in served_files(repos[i])})
        assert downloads(hub) == wanted
        started = ray_start(first)
        assert started is not None and hub.requests and max(r.time for r in hub.requests) < started

        # the same command again: its preflight asks the hub before Ray starts, as the first did; its
        # CTT stage finished earlier (no trial to run: the preflight and Ray's start are what count here)
        served = len(hub.requests)
        second = run(search_cmd(tmp_path / "runs1", *overrides), env, home, timeout=540)
        assert second.returncode == 0, second.stderr[-3000:]
        assert "[ctt] finished earlier" in second.stdout
        assert downloads(hub) == wanted  # nothing downloaded again
        again = hub.requests[served:]
        assert again and not [r for r in again if r.method == "GET" and "/resolve/" in r.path]
        started = ray_start(second)
        assert started is not None and max(r.time for r in again) < started


@needs_data
def test_unknown_gated_and_unreachable_models_are_one_line_and_exit_2_before_ray(repos, tmp_path) -> None:
    unreachable = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with LocalHub({GATED: repos[GATED]}, gated=[GATED]) as hub:
        cases = {  # name -> (endpoint, override, what the one line must say)
            "404": (hub.endpoint, "student_model=no-such-org/no-such-model",
                    ["'no-such-org/no-such-model'", f"{hub.endpoint} has no repository with that id", "check the id"]),
            "401": (hub.endpoint, f"teacher_model={GATED}",
                    [f"'{GATED}'", "gated repository", "accept its terms", "hf auth login", "HF_TOKEN"]),
            "unreachable": (unreachable, "teacher_model=roberta-base",
                            ["'roberta-base'", f"cannot be downloaded from {unreachable}", "ConnectError",
                             "check the network"]),
        }
        failures = []
        for name, (endpoint, override, says) in cases.items():  # one at a time: each is timed
            home = tmp_path / name  # a cache of its own: nothing of these models in it
            ran = run(search_cmd(home / "runs", override), user_env(home, endpoint), home, timeout=240)
            lines = [line for line in ran.stderr.splitlines() if line.strip()]
            ok = (ran.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ")
                  and all(text in lines[0] for text in says) and "Traceback" not in ran.stdout + ran.stderr
                  and not ran.stdout.strip() and not (home / "runs").exists() and ray_start(ran) is None
                  and ran.end - ran.start < 60)
            if not ok:
                failures.append(f"{name}: rc={ran.returncode} in {ran.end - ran.start:.0f} s "
                                f"stderr={ran.stderr!r} stdout={ran.stdout[-300:]!r}")
        assert not failures, "\n".join(failures)
    assert not hub.file_downloads()
    assert {r.status for r in hub.requests if r.path.startswith(f"/{GATED}/resolve/")} == {401}  # asked, never sent
