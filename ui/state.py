"""Session state every page shares: the chosen workspace, the LLM model id, cached model/dictionary loaders,
and one way to show an engine error in the page.

Pages import these instead of reading `st.session_state` themselves, so the landing page's choices
(workspace, model set, LLM) reach every page. The model and dictionaries are loaded once per
server process (`st.cache_resource`) and shared by all sessions; nothing here writes to disk.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import streamlit as st

import core.cache
from core.cli import UserError
from core.models import ArtifactError, HubUnreachableError

WORKSPACE_KEY = "workspace"
LLM_MODEL_KEY = "llm_model"
MODEL_SET_KEY = "model_set"
WORKSPACE_ENV = "SAE_EXPLORER_WORKSPACE"  # e.g. `SAE_EXPLORER_WORKSPACE=my.duckdb ./dev app`

# Errors the engine raises for bad input or missing/locked/corrupt data: shown as st.error, never a traceback.
# (WorkspaceError and WorkspaceLockedError are UserError subclasses.)
CORE_ERRORS: tuple[type[BaseException], ...] = (
    UserError,
    ArtifactError,
    HubUnreachableError,
    ValueError,
    FileNotFoundError,
)


def startup_workspace() -> Path:
    """The workspace a new session starts on: $SAE_EXPLORER_WORKSPACE if set, else the embedded default's."""
    value = os.environ.get(WORKSPACE_ENV, "").strip()
    return Path(value).expanduser() if value else core.cache.DEFAULT_WORKSPACE


def current_workspace() -> Path:
    """The workspace chosen on the landing page (`st.session_state["workspace"]`), else `startup_workspace()`."""
    value = st.session_state.get(WORKSPACE_KEY)
    return Path(value) if value else startup_workspace()


def set_workspace(path: Path | str | None) -> None:
    """Choose the workspace every page reads (None: back to the embedded default's)."""
    st.session_state[WORKSPACE_KEY] = str(path) if path else None


def llm_model() -> str | None:
    """The litellm model id chosen on the landing page (`st.session_state["llm_model"]`), or None if none is set."""
    value = st.session_state.get(LLM_MODEL_KEY)
    return value.strip() or None if isinstance(value, str) else None


def set_llm_model(model_id: str | None) -> None:
    """Set the litellm model id the explain/score and circuit-summary buttons use (keys stay in the environment)."""
    st.session_state[LLM_MODEL_KEY] = (model_id or "").strip() or None


def model_set() -> str:
    """The model set chosen on the landing page ('default' | 'gpt2'), else the one the workspace was built from."""
    from core.models import MODEL_NAMES

    value = st.session_state.get(MODEL_SET_KEY)
    if value in MODEL_NAMES:
        return value
    built_from = workspace_model_name()
    return built_from if built_from in MODEL_NAMES else "default"


def set_model_set(name: str) -> None:
    """Choose the model set ('default' | 'gpt2') the pages load for live work such as tracing."""
    st.session_state[MODEL_SET_KEY] = name


@st.cache_resource(show_spinner="Loading the model…", max_entries=2)
def cached_model(name: str = "default"):
    """The subject model `name` ('default' | 'gpt2'), loaded once per server process (core.models.load_model)."""
    from core.models import load_model

    return load_model(name)


@st.cache_resource(show_spinner="Loading dictionaries…", max_entries=4)
def cached_dictionaries(model_name: str = "default", ids: tuple[str, ...] | None = None) -> dict:
    """The model's dictionaries by id (all, or those in `ids`), loaded once per server process
    (core.dictionaries.load_dictionaries; for 'default' the embedded ones, as load_default_dictionaries)."""
    from core.dictionaries import load_dictionaries

    return load_dictionaries(model_name, ids=list(ids) if ids is not None else None)


def workspace_model_name(workspace: Path | None = None) -> str:
    """The model name a workspace was built from ('default' if it does not say or cannot be read)."""
    from core import store

    try:
        with store.session(workspace or current_workspace()) as con:
            info = store.get_info(con, "model") or {}
    except UserError:
        return "default"
    return str(info.get("name") or "default")


def show_error(exc: BaseException, context: str | None = None) -> None:
    """Render an engine error as st.error: its message (which says what to do), optionally after `context`."""
    message = str(exc) or type(exc).__name__
    st.error(f"{context}: {message}" if context else message)


@contextmanager
def core_errors(context: str | None = None, stop: bool = True) -> Iterator[None]:
    """Run a block of engine calls; an engine error becomes st.error (and stops the script if `stop`).

    Usage: `with core_errors("Loading the latent"): card = latent_card(...)`.
    """
    try:
        yield
    except CORE_ERRORS as exc:
        show_error(exc, context)
        if stop:
            st.stop()
