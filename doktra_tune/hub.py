"""What the Hugging Face Hub answered, as one line with its fix: for model ids (`models.fetch_model`)
and `hf:` dataset ids (`data`). The endpoint is `HF_ENDPOINT` (huggingface_hub's `constants.ENDPOINT`).
`where_here` names the host (and Ray node) and Hugging Face cache an error about a missing model is
about. The fixes name huggingface_hub's `hf` command (`hf download`, `hf auth login`)."""

from __future__ import annotations

import socket
import sys

from doktra_tune.errors import first_line


def host_here() -> str:
    """This host and, inside Ray, its node address ("host gpu-1 (Ray node 10.1.2.3)"), for the errors
    about a model or data that is not here: a trial's error then says which node of a cluster lacks it."""
    host = socket.gethostname()
    ray = sys.modules.get("ray")  # never imported for this: only a process that runs Ray is on a node
    if ray is not None and ray.is_initialized():
        try:
            host += f" (Ray node {ray.util.get_node_ip_address()})"
        except Exception:  # noqa: BLE001 - the address is a courtesy; the host name stands alone
            pass
    return f"host {host}"


def where_here() -> str:
    """`host_here` and the Hugging Face cache this process reads (`HF_HUB_CACHE`)."""
    from huggingface_hub import constants

    return f"{host_here()}, Hugging Face cache {constants.HF_HUB_CACHE}"


def hub_failure(err: BaseException, repo_id: str, kind: str) -> str:
    """Why the hub did not give `repo_id` (a `kind`: "model" | "dataset"), and what to do: a gated
    repository (401), an unknown or private id (404), a model repo without config.json, or a hub that
    cannot be reached. The caller adds its local alternative."""
    from huggingface_hub import constants
    from huggingface_hub.errors import GatedRepoError, RemoteEntryNotFoundError, RepositoryNotFoundError

    hub = constants.ENDPOINT
    login = "log in (`hf auth login` or export HF_TOKEN)"
    if isinstance(err, GatedRepoError):  # a subclass of RepositoryNotFoundError: first
        return (f"{kind} {repo_id!r} cannot be downloaded: it is a gated repository on {hub} and this machine is "
                f"not authorised; accept its terms on {hub}/{repo_id} and {login}")
    if isinstance(err, RepositoryNotFoundError):
        return (f"{kind} {repo_id!r} cannot be downloaded: {hub} has no repository with that id (or it is "
                f"private); check the id, or {login} if it is private")
    if isinstance(err, RemoteEntryNotFoundError):
        return (f"{kind} {repo_id!r} cannot be used: its repository on {hub} has no config.json, so it is not a "
                "transformers model; check the id")
    cause = err.__cause__ if err.__cause__ is not None else err
    reason = f"{type(cause).__name__}: {first_line(cause, 160)}" if str(cause).strip() else type(cause).__name__
    offline, repo_type = ("HF_HUB_OFFLINE=1", "") if kind == "model" else ("HF_DATASETS_OFFLINE=1", " --repo-type dataset")
    return (f"{kind} {repo_id!r} cannot be downloaded from {hub} ({reason}); check the network (and HF_ENDPOINT), "
            f"or download it where there is one (`hf download {repo_id}{repo_type}`) and run with {offline}")
