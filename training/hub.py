"""Pushing a run's final model to the Hugging Face Hub (`hub.repo_id` in the training config).

At the end of training rank 0 uploads `<run_dir>/final` (config.json and model.safetensors, which
`VGGT.from_pretrained("<repo_id>")` loads) as one commit, creating the model repository when it does not exist.
The token is huggingface_hub's own (`hf auth login` or HF_TOKEN); `hub.endpoint` names another Hub server.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def check_repo_id(repo_id: str) -> None:
    """Refuse an id the Hub cannot have (one line naming it), before the run spends its time."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(str(repo_id))
    except HFValidationError:
        raise ValueError(f"hub.repo_id {repo_id!r} is not a Hub model id; use <user or org>/<name>") from None


def push_model_folder(folder: Path, hub_cfg: Mapping[str, Any], commit_message: str) -> str:
    """Upload `folder` to the model repo `hub_cfg["repo_id"]`; returns the commit's URL.

    A failed push is one line (a ValueError) that names the repo and says how to push the saved folder later.
    """
    from huggingface_hub import HfApi

    repo_id = str(hub_cfg["repo_id"])
    api = HfApi(endpoint=hub_cfg.get("endpoint") or None)
    try:
        api.create_repo(repo_id, repo_type="model", private=bool(hub_cfg.get("private")), exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message)
    except Exception as err:  # HTTP errors, the HTTP client's network errors, a refused token: the run is done
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"hub.repo_id: pushing {folder} to {repo_id} failed ({first_line}); the model stays in {folder}: "
            f"push it later with `hf upload {repo_id} {folder}`"
        ) from None
    return str(commit.commit_url)
