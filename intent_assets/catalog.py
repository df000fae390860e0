"""The catalog's policy, applied once to the whole code location: owners, domain tags, code links.

Each asset declares its own `kinds` (what computes and stores it) and description where it is
defined; who owns it and which domain it belongs to follow from its group, so they are set here.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path

from dagster import (
    AnchorBasedFilePathMapping,
    AssetSpec,
    CodeReferencesMetadataValue,
    Definitions,
    LocalFileCodeReference,
    link_code_references_to_git,
    with_source_code_references,
)

# Group (= domain subpackage) -> owning team.
OWNERS = {
    "ingest": "team:data",
    "features": "team:data",
    "streaming": "team:data",
    "experiments": "team:data",
    "uplift": "team:ml-platform",
    "training": "team:ml-platform",
    "reports": "team:ml-platform",
    "publication": "team:ml-platform",
    "monitoring": "team:ml-platform",
}

_PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _owned(spec: AssetSpec) -> AssetSpec:
    group = spec.group_name or "default"
    if group not in OWNERS:
        raise ValueError(f"asset {spec.key.to_user_string()} is in group {group!r}, which has no owner")
    return spec.merge_attributes(owners=[OWNERS[group]], tags={"domain": group})


def code_reference_here() -> dict:
    """Metadata linking an `AssetSpec` to the line that declares it (Dagster's helper links only
    assets with a function behind them)."""
    caller = inspect.stack()[1]
    return {"dagster/code_references": CodeReferencesMetadataValue(code_references=[
        LocalFileCodeReference(file_path=caller.filename, line_number=caller.lineno)])}


def with_code_references(assets: list, git_url: str | None, git_branch: str = "main") -> list:
    """Every asset linked to the code that defines it: the local file, or the file in the git
    repository when its URL is given (`INTENT_GIT_URL`)."""
    linked = with_source_code_references(assets)
    if not git_url:
        return list(linked)
    return list(link_code_references_to_git(
        linked, git_url=git_url, git_branch=git_branch,
        file_path_mapping=AnchorBasedFilePathMapping(local_file_anchor=_PROJECT_ROOT / "pyproject.toml",
                                                     file_anchor_path_in_repository="pyproject.toml")))


def catalogued(domains: Definitions) -> Definitions:
    """The domains' definitions with owners, domain tags and code references on every asset."""
    assets = with_code_references(list(domains.assets or []), os.environ.get("INTENT_GIT_URL"),
                                  os.environ.get("INTENT_GIT_BRANCH", "main"))
    linked = Definitions(assets=assets, asset_checks=domains.asset_checks, jobs=domains.jobs,
                         schedules=domains.schedules, sensors=domains.sensors,
                         resources=domains.resources, executor=domains.executor,
                         loggers=domains.loggers, metadata=domains.metadata)
    return linked.map_asset_specs(func=_owned)
