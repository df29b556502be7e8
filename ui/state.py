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

import core.cache.workspace
import core.paths
from core import store
from core.errors import UserError
from core.subjects.models import ArtifactError, HubUnreachableError

WORKSPACE_KEY = "workspace"
LLM_MODEL_KEY = "llm_model"
MODEL_SET_KEY = "model_set"
WORKSPACE_ENV = "SAE_EXPLORER_WORKSPACE"  # e.g. `SAE_EXPLORER_WORKSPACE=my.duckdb ./dev app`
# Folders besides the data folder whose workspaces the home page's box may open, separated by ':'.
WORKSPACE_DIRS_ENV = "SAE_EXPLORER_WORKSPACE_DIRS"  # e.g. `SAE_EXPLORER_WORKSPACE_DIRS=/srv/ws:/home/me/ws`
# How long a page waits for another process's lock on the workspace before saying who holds it.
PROBE_TIMEOUT_S = 2.0

# Errors the engine raises for bad input or missing/locked/corrupt data: shown as st.error, never a traceback.
# (WorkspaceError and WorkspaceLockedError are UserError subclasses.)
CORE_ERRORS: tuple[type[BaseException], ...] = (
    UserError,
    ArtifactError,
    HubUnreachableError,
    ValueError,
    FileNotFoundError,
)


# The main script must stay app.py (pages/ beside it keeps every direct page URL such as
# /Latents?dictionary=..&latent=.. working); Streamlit labels its navigation entry after the file name, so this
# style shows that entry as "Home". A style-only st.html takes no space on the page.
HOME_LABEL_CSS = """<style>
[data-testid="stSidebarNavItems"] > li:first-child [data-testid="stSidebarNavLink"] span { font-size: 0; }
[data-testid="stSidebarNavItems"] > li:first-child [data-testid="stSidebarNavLink"] span::after {
  content: "Home"; font-size: 1rem; }
</style>"""


def home_label() -> None:
    """Label the home page "Home" in the navigation (every page calls this, directly or through the workspace checks)."""
    st.html(HOME_LABEL_CSS)


def startup_workspace() -> Path:
    """The workspace a new session starts on: $SAE_EXPLORER_WORKSPACE if set, else the embedded default's."""
    value = os.environ.get(WORKSPACE_ENV, "").strip()
    return Path(value).expanduser() if value else core.cache.workspace.DEFAULT_WORKSPACE


def current_workspace() -> Path:
    """The workspace chosen on the landing page (`st.session_state["workspace"]`), else `startup_workspace()`.

    A session that opens a page directly (a link) before the default workspace exists gets it copied from the
    shipped seed first (`seed_default_workspace`), so every page has content from the first start."""
    value = st.session_state.get(WORKSPACE_KEY)
    if value:
        return Path(value)
    workspace = startup_workspace()
    if workspace == core.cache.workspace.DEFAULT_WORKSPACE and not workspace.exists():
        workspace = seed_default_workspace()
    return workspace


def seed_workspace() -> Path:
    """Where data/ cannot be written: the shipped seed unpacked in the system's temporary folder
    (core.build.seed.temporary_copy); raises SeedError (a UserError) if there is no fitting seed."""
    from core.build.seed import SEED_DIR, temporary_copy

    return temporary_copy(SEED_DIR)


def seed_default_workspace() -> Path:
    """Copy the shipped seed into place as the default workspace if it is missing and the seed fits (seconds);
    returns the workspace pages should read: the default, or the seed's copy in the temporary folder where
    data/ cannot be written. Does nothing (returns the default's path) without a fitting seed: the home page builds it then."""
    from core.build.seed import SEED_DIR, seed_problem

    default = core.cache.workspace.DEFAULT_WORKSPACE
    if default.exists() or core.cache.workspace.build_lock_holder(default) is not None:
        return default  # (one being set up by another session or process: the page says so)
    if seed_problem(SEED_DIR) is not None:
        return default
    try:
        core.cache.workspace.ensure_default_workspace(path=default, wait_for_other_processes=False, seed=SEED_DIR)
    except core.cache.workspace.DataFolderReadOnlyError:
        try:
            return seed_workspace()
        except (UserError, OSError):
            return default
    except UserError:  # e.g. another process sets it up right now: the page says what it finds
        pass
    return default


def is_default_workspace(workspace: Path) -> bool:
    """True if `workspace` is the embedded default's (the one the app builds and fills itself)."""
    try:
        return Path(workspace).resolve() == Path(core.cache.workspace.DEFAULT_WORKSPACE).resolve()
    except OSError:
        return False


def default_job_notice(workspace: Path, what: str, missing: bool = True) -> None:
    """If `what` is `missing` on the embedded default's workspace because the app is still making it (the
    workspace being built, or the background job explaining and scoring), show that with its progress and time
    left, refreshed every few seconds, and stop the page: never a command for the user to run meanwhile. A seed
    copy in progress (about a second) is waited for (`ui.boot.wait_for_default`) and the page goes on; a longer
    set-up shows a notice that reruns the page when it ends.
    Returns (doing nothing) for any other workspace or when nothing is being made; the page says what it lacks."""
    if not missing or not is_default_workspace(workspace):
        return
    from core.autointerp import default_job
    from ui.text import literal

    if not Path(workspace).exists() or core.cache.workspace.build_lock_holder(workspace) is not None:
        from ui.boot import wait_for_default

        with st.spinner("Waiting for the default workspace: the app is copying it into place…"):
            wait_for_default(workspace)  # a seed copy takes about a second; a build takes longer
        if Path(workspace).exists() and core.cache.workspace.build_lock_holder(workspace) is None:
            return  # ready: the page goes on and says what it still lacks

        @st.fragment(run_every=2.0)
        def setting_up() -> None:
            if Path(workspace).exists() and core.cache.workspace.build_lock_holder(workspace) is None:
                st.rerun()  # set up meanwhile: show the page
            st.info(
                f"The app is setting up the default workspace; this page shows its {literal(what)} once it is "
                "ready. The home page shows the progress."
            )

        setting_up()
        st.stop()
    try:
        status = default_job.job_status(workspace)
        if status.state == "not started":  # a page opened directly: start the job the home page would start
            status = default_job.start_default_job(workspace)
    except (OSError, UserError):
        return
    if status.state not in ("starting", "running"):
        return

    @st.fragment(run_every=3.0)
    def live() -> None:
        now = default_job.job_status(workspace)
        if now.state not in ("starting", "running"):
            st.rerun()  # the job ended: show the page with what it stored
        left = default_job.time_left_text(now)
        st.info(
            f"The app is explaining and scoring every latent of the default workspace in the background; this page "
            f"shows its {literal(what)} as soon as the {literal(now.stage or 'first')} stage has stored them."
        )
        st.progress(
            min(max(now.fraction, 0.0), 1.0),
            text=literal(
                f"{now.stage or 'starting'} stage: {now.phase or 'starting'}" + (f" ({left})" if left else "")
            ),
        )

    live()
    st.stop()


def has_stored_analyses(workspace: Path) -> bool:
    """True if the workspace holds computed analyses (what the Scores and Deciles pages chart); False if unreadable."""
    try:
        return bool(store.read_analyses(workspace))
    except UserError:
        return False


def is_seed_copy(workspace: Path) -> bool:
    """True if `workspace` is the shipped seed's copy in the temporary folder (used where data/ is read-only)."""
    return Path(workspace).parent.name.startswith("sae-explorer-seed-")


def read_only_default_notice() -> None:
    """Where data/ cannot be written: say so and what to do, and open a copy of the shipped seed in the system's
    temporary folder (every page works; what is saved stays in that copy only); without a fitting seed, stop."""
    from ui.text import code, literal

    folder = core.cache.workspace.DEFAULT_WORKSPACE.parent
    ways_out = (
        f"To keep your work, give this user write permission on {code(folder)} and reload, or start the app on a "
        f"workspace in a writable folder: {code('SAE_EXPLORER_WORKSPACE=/path/to/workspace.duckdb ./dev app')} "
        f"(e.g. a copy of the temporary one named here, with its .data folder)."
    )
    try:
        copy = seed_workspace()
    except (UserError, OSError) as exc:
        st.error(
            f"This app cannot write the data folder {code(folder)} (it is read-only for this user) and has no "
            f"shipped workspace to show instead ({literal(str(exc))}). {ways_out}"
        )
        st.stop()
    set_workspace(copy)
    st.warning(
        f"This app cannot write the data folder {code(folder)} (it is read-only for this user), so it shows a copy "
        f"of the shipped default workspace in the temporary folder, {code(copy)}: every page works, but what you "
        f"save there is lost when that folder is cleared, and the background job that extends it is off. {ways_out}"
    )


def set_workspace(path: Path | str | None) -> None:
    """Choose the workspace every page reads (None: back to the embedded default's)."""
    st.session_state[WORKSPACE_KEY] = str(path) if path else None


class WorkspacePathError(UserError):
    """A path typed into the workspace box that the app refuses to open (outside the allowed folders, or not a workspace file)."""


def allowed_workspace_dirs() -> list[Path]:
    """The folders (symlinks resolved) whose workspaces, at any depth, the home page's box may open: the data
    folder (core.paths.DATA_DIR), each folder in $SAE_EXPLORER_WORKSPACE_DIRS (separated by ':') and the
    folder of $SAE_EXPLORER_WORKSPACE. Anyone who can reach the app can open and write what lies there."""
    dirs = [Path(core.paths.DATA_DIR)]
    dirs += [Path(d).expanduser() for d in os.environ.get(WORKSPACE_DIRS_ENV, "").split(os.pathsep) if d.strip()]
    if os.environ.get(WORKSPACE_ENV, "").strip():
        dirs.append(startup_workspace().parent)
    out: list[Path] = []
    for d in dirs:
        resolved = d.resolve()
        if resolved not in out:
            out.append(resolved)
    return out


def checked_workspace_path(typed: str) -> Path:
    """The workspace file that `typed` names, with symlinks and `..` resolved, if the app may open it: inside
    an allowed folder (`allowed_workspace_dirs`; checked first, so a refused path says nothing about what
    exists there) or the session's current workspace, a .duckdb file, existing. Raises WorkspacePathError
    saying why and what to do."""
    path = Path(typed.strip()).expanduser().resolve()
    allowed = allowed_workspace_dirs()
    current = path == current_workspace().resolve()  # already chosen (or configured at startup)
    if not current and not any(path.is_relative_to(d) for d in allowed):
        raise WorkspacePathError(
            f"{typed.strip()!r} is outside the folders this app opens workspaces from (after following links "
            f"and '..'): {', '.join(str(d) for d in allowed)}. To add a folder, restart the app with "
            f"{WORKSPACE_DIRS_ENV}=/path/to/folder (several separated by ':'), e.g. "
            f"`{WORKSPACE_DIRS_ENV}=/srv/workspaces ./dev app`."
        )
    if path.suffix != ".duckdb":
        raise WorkspacePathError(
            f"{typed.strip()!r} is not a .duckdb file; a workspace is a NAME.duckdb file made by "
            "`python -m core cache --workspace NAME.duckdb`."
        )
    if not path.is_file():
        raise WorkspacePathError(
            f"{path} does not exist; build one with `python -m core cache --model default --tokens N --workspace {path}`."
        )
    return path


def workspace_error_text(exc: BaseException) -> str:
    """The one message a page shows for an engine error about the workspace. For a damaged file it names the
    file, what is wrong and the way out the app offers (for the embedded default: the home page's button)."""
    if not isinstance(exc, store.WorkspaceDamagedError) or exc.path is None:
        return str(exc) or type(exc).__name__
    if Path(exc.path) == Path(core.cache.workspace.DEFAULT_WORKSPACE).resolve():
        way_out = (
            "set it aside and rebuild the default with the button on the home page (the file is kept under a "
            "new name), or choose another workspace on the home page"
        )
    else:
        way_out = (
            f"choose another workspace on the home page, or set this one aside (move or rename the file and its "
            f"{store.data_dir(exc.path).name} folder; keep them if they hold results you want to recover) and "
            f"rebuild it with `python -m core cache --workspace {exc.path} ...`"
        )
    return (
        f"{exc.path} is not a readable DuckDB workspace: {exc.detail}. Nothing in it was changed. Way out: {way_out}."
    )


def check_workspace_or_stop(workspace: Path, stop_if_locked: bool = True) -> None:
    """Open `workspace` once; if it is damaged or not a workspace, or (with `stop_if_locked`) another process
    holds it for PROBE_TIMEOUT_S, show one st.error saying which file or process, why and what to do, and
    stop the page. A missing workspace or one made by older code passes: pages say what to do about those.

    `stop_if_locked=False` is for a page that works without the workspace and keeps the user's unsaved work
    across reruns (Circuits): a lock is not waited for here, and is left to the page's own short timeouts."""
    home_label()
    if not Path(workspace).exists():
        return
    try:
        store.check_workspace(workspace, timeout=PROBE_TIMEOUT_S if stop_if_locked else 0.1)
    except store.WorkspaceOutdatedError:
        return
    except store.WorkspaceLockedError as exc:
        if stop_if_locked:
            show_error(exc)
            st.stop()
    except UserError as exc:
        show_error(exc)
        st.stop()


def open_workspace_or_stop(stop_if_locked: bool = True) -> Path:
    """The chosen workspace (`current_workspace()`), after `check_workspace_or_stop`: a page that starts with
    this shows one clear message, not a traceback, when the workspace is damaged (or locked)."""
    workspace = current_workspace()
    check_workspace_or_stop(workspace, stop_if_locked)
    return workspace


def llm_model() -> str | None:
    """The litellm model id chosen on the landing page (`st.session_state["llm_model"]`), or None if none is set."""
    value = st.session_state.get(LLM_MODEL_KEY)
    return value.strip() or None if isinstance(value, str) else None


def set_llm_model(model_id: str | None) -> None:
    """Set the litellm model id the explain/score and circuit-summary buttons use (keys stay in the environment)."""
    st.session_state[LLM_MODEL_KEY] = (model_id or "").strip() or None


def model_set() -> str:
    """The model set chosen on the landing page ('default' | 'gpt2'), else the one the workspace was built from."""
    from core.subjects.models import MODEL_NAMES

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
    """The subject model `name` ('default' | 'gpt2'), loaded once per server process (core.subjects.models.load_model)."""
    from core.subjects.models import load_model

    return load_model(name)


@st.cache_resource(show_spinner="Loading dictionaries…", max_entries=4)
def cached_dictionaries(model_name: str = "default", ids: tuple[str, ...] | None = None) -> dict:
    """The model's dictionaries by id (all, or those in `ids`), loaded once per server process
    (core.subjects.dictionaries.load_dictionaries; for 'default' the embedded ones, as load_default_dictionaries)."""
    from core.subjects.dictionaries import load_dictionaries

    return load_dictionaries(model_name, ids=list(ids) if ids is not None else None)


def workspace_model_name(workspace: Path | None = None) -> str:
    """The model name a workspace was built from ('default' if it does not say or cannot be read)."""
    try:
        with store.session(workspace or current_workspace(), timeout=PROBE_TIMEOUT_S) as con:
            info = store.get_info(con, "model") or {}
    except UserError:
        return "default"
    return str(info.get("name") or "default")


def show_error(exc: BaseException, context: str | None = None) -> None:
    """Render an engine error as st.error: its message (which says what to do), optionally after `context`.

    Both are shown literally (ui.text.literal): messages quote paths, model ids and prompts as typed."""
    from ui.text import literal

    message = workspace_error_text(exc)
    st.error(literal(f"{context}: {message}" if context else message))


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
