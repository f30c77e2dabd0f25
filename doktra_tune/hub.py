"""What the Hugging Face Hub answered, as one line with its fix: for model ids (`models.fetch_model`)
and `hf:` dataset ids (`data`). The endpoint is `HF_ENDPOINT` (huggingface_hub's `constants.ENDPOINT`)."""

from __future__ import annotations

from doktra_tune.errors import first_line


def hub_failure(err: BaseException, repo_id: str, kind: str) -> str:
    """Why the hub did not give `repo_id` (a `kind`: "model" | "dataset"), and what to do: a gated
    repository (401), an unknown or private id (404), a model repo without config.json, or a hub that
    cannot be reached. The caller adds its local alternative."""
    from huggingface_hub import constants
    from huggingface_hub.errors import GatedRepoError, RemoteEntryNotFoundError, RepositoryNotFoundError

    hub = constants.ENDPOINT
    login = "log in (`huggingface-cli login` or export HF_TOKEN)"
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
            f"or download it where there is one (huggingface-cli download {repo_id}{repo_type}) and run with {offline}")
