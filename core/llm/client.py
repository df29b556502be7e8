"""LLM access: the one module that imports litellm.

Every call of the project to a language model (explainer, scorers, circuit summaries) goes through
`LLMClient` here, which adds what litellm leaves to the caller:

1. Credentials: `check_credentials(model)` names the missing environment variable before any work.
   API keys come from the environment (or an explicit `api_key=` param that is never stored or logged).
2. A response cache in the workspace (`llm_responses`), keyed by a hash of (model, messages, params
   minus connection settings). A cached reply costs nothing and is returned as it was first received,
   so reruns are free and reproducible. Only replies that arrived are cached; transport errors are not.
3. Bounded concurrency: one `asyncio.Semaphore(concurrency)` per client.
4. Retries with exponential backoff (and jitter) on rate limits, timeouts, connection errors and
   503/502s; after `max_retries` the call comes back as a failed `LLMReply` with `transient=True`.
   Authentication, permission and unknown-model errors raise `LLMConfigError` at once (every further
   call would fail the same way).
5. Accounting: every call (cached or not) appends a row to `llm_usage` with its purpose, latent,
   tokens and cost (`litellm.completion_cost` when the model's price is known, else None).
6. Log-probabilities of the generated tokens when asked (`logprobs=True, top_logprobs=k`) and the
   provider returns them; `reply.logprobs` is None otherwise.
7. Several endpoints: with a router config (`LLMClient(router=path)`, or the environment variable
   `SAE_LLM_ROUTER`), requests whose model is one of the config's `model_name`s go through a litellm
   `Router` that balances them over the endpoints and fails over when one stops answering (see
   `load_router_config` for the file format). Cache, journal and accounting are the same: a reply
   is cached under the model name and the endpoints' model ids, whichever endpoint answered.

Durability. Before a call returns, its usage row (and its reply, when a new one arrived) is
appended to the client's write-ahead file `NAME.duckdb.data/llm-journal/*.jsonl`, fsynced unless
the call was a cache hit. The rows are merged into DuckDB in one short write session every
`flush_every` calls and on `flush()`, so a run of thousands of calls holds the DuckDB file only
briefly and the app keeps reading. The next client of the workspace merges a journal left by a
killed process (its flock is free) before it reads the cache: a killed run's finished replies are
never paid again and its usage log is complete. Rows and a mark naming their journal commit in one
transaction, so a crash between that commit and the file's removal stores nothing twice.

litellm is imported lazily: importing this module is cheap.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import fcntl
import hashlib
import itertools
import json
import logging
import os
import random
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.errors import UserError
from core.progress import Progress

log = logging.getLogger(__name__)

# Params that say where/how to connect, not what to compute: never part of the cache key, never stored.
CONNECTION_PARAMS = frozenset(
    {"api_key", "api_base", "base_url", "api_version", "timeout", "num_retries", "metadata", "extra_headers"}
)
TRANSIENT_ERRORS = (
    "RateLimitError",
    "Timeout",
    "APIConnectionError",
    "ServiceUnavailableError",
    "BadGatewayError",
    "RouterRateLimitError",  # every endpoint of a router group is cooling down
)
FATAL_ERRORS = ("AuthenticationError", "PermissionDeniedError", "NotFoundError")


class LLMConfigError(UserError):
    """The model cannot be used as configured: unknown provider, missing or rejected credentials."""


class MissingCredentialsError(LLMConfigError):
    """A model's provider needs an environment variable that is not set."""


def _litellm():
    import os

    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    return litellm


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token with its log-probability and the provider's top alternatives `[(token, logprob)]`."""

    token: str
    logprob: float
    top: list[tuple[str, float]] = field(default_factory=list)


@dataclass(frozen=True)
class Usage:
    """Tokens of one call and its cost in USD (None when litellm does not know the model's price)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None


@dataclass(frozen=True)
class LLMReply:
    """What one call returned. `error` is set (and `text` may be None) when no usable reply arrived.

    `cached`: served from the workspace cache (cost nothing now); `transient`: the error was a rate
    limit/timeout/connection failure that outlived the retries (a rerun will try again).
    """

    text: str | None
    cached: bool
    usage: Usage
    error: str | None = None
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] | None = None
    transient: bool = False
    key: str = ""
    model: str = ""

    @property
    def ok(self) -> bool:
        """A reply arrived, was not cut off by the token limit, and is not empty."""
        return self.error is None and bool(self.text and self.text.strip()) and not self.truncated

    @property
    def truncated(self) -> bool:
        """The provider stopped because of the token limit."""
        return self.finish_reason == "length"

    def problem(self) -> str | None:
        """Why this reply cannot be used (None if it can): the error, truncation, or emptiness."""
        if self.error is not None:
            return self.error
        if self.truncated:
            return "reply truncated at the token limit"
        if not (self.text and self.text.strip()):
            return "empty reply"
        return None


@dataclass(frozen=True)
class LLMRequest:
    """One call to make: model, chat messages, litellm params, and tags for accounting."""

    model: str
    messages: list[dict]
    params: dict = field(default_factory=dict)
    purpose: str = ""
    dictionary: str | None = None
    latent: int | None = None


def cache_key(model: str, messages: list[dict], params: dict) -> str:
    """SHA-256 of (model, messages, params without connection settings): the response-cache key."""
    body = {
        "model": model,
        "messages": messages,
        "params": {k: v for k, v in sorted(params.items()) if k not in CONNECTION_PARAMS},
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def _request_record(model: str, messages: list[dict], params: dict) -> str:
    return json.dumps(
        {
            "model": model,
            "messages": messages,
            "params": {k: v for k, v in params.items() if k not in CONNECTION_PARAMS},
        },
        default=str,
    )


# ---------------------------------------------------------------------------------------------
# Credentials


def check_credentials(
    model: str, api_key: str | None = None, api_base: str | None = None, router: RouterConfig | None = None
) -> None:
    """Raise `LLMConfigError` unless `model` names a known litellm provider whose credentials are available.

    Checks the environment only (no request is made); an explicit `api_key` counts as available.
    The error names the missing environment variable(s). A model named by `router` (default: the
    config in `SAE_LLM_ROUTER`) was checked when its config was read.
    """
    router = router or env_router()
    if router is not None and model in router.model_names:
        return
    litellm = _litellm()
    if not model or "/" not in model and model not in litellm.model_cost:
        raise LLMConfigError(
            f"model {model!r} is not a litellm model id; write provider/model, e.g. openai/gpt-4o-mini or anthropic/claude-3-5-haiku-latest"
        )
    try:
        litellm.get_llm_provider(model, api_base=api_base)
    except Exception as exc:
        raise LLMConfigError(
            f"model {model!r}: litellm knows no such provider ({str(exc).splitlines()[0][:200]}); write provider/model, e.g. openai/gpt-4o-mini"
        ) from None
    if api_key:
        return
    env = litellm.validate_environment(model=model, api_base=api_base)
    missing = list(env.get("missing_keys") or [])
    if missing:
        names = ", ".join(missing)
        raise MissingCredentialsError(
            f"model {model} needs the environment variable {names}, which is not set; "
            f"export {missing[0]}=... before running (keys are read from the environment only and never stored)"
        )


# ---------------------------------------------------------------------------------------------
# Several endpoints: a litellm Router configured in one file

ROUTER_ENV = "SAE_LLM_ROUTER"  # path of a router config used when a client is given none
ROUTING_STRATEGIES = (
    "simple-shuffle",
    "least-busy",
    "latency-based-routing",
    "usage-based-routing-v2",
    "cost-based-routing",
)
_ROUTER_KEYS = {
    "routing_strategy": str,
    "num_retries": int,
    "timeout": (int, float),
    "allowed_fails": int,
    "cooldown_time": (int, float),
    "model_list": list,
}
_ENDPOINT_KEYS = {
    "model_name": str,
    "model": str,
    "api_base": str,
    "api_key_env": str,
    "rpm": int,
    "tpm": int,
    "max_parallel_requests": int,
    "weight": (int, float),
}


@dataclass(frozen=True)
class Endpoint:
    """One deployment of a router group: the litellm model id at `api_base`, its key read from `api_key_env`."""

    model_name: str
    model: str
    api_base: str | None = None
    api_key_env: str | None = None
    rpm: int | None = None
    tpm: int | None = None
    max_parallel_requests: int | None = None
    weight: float | None = None


@dataclass(frozen=True)
class RouterConfig:
    """A litellm Router's settings and endpoints, read and checked by `load_router_config`."""

    path: str
    endpoints: tuple[Endpoint, ...]
    routing_strategy: str = "simple-shuffle"
    num_retries: int = 3
    timeout: float = 120.0
    allowed_fails: int = 1
    cooldown_time: float = 30.0

    @property
    def model_names(self) -> set[str]:
        """The names requests use to reach a group of endpoints."""
        return {e.model_name for e in self.endpoints}

    def key_model(self, model_name: str) -> str:
        """The model named in cache keys for `model_name`: the name and its endpoints' model ids."""
        ids = sorted({e.model for e in self.endpoints if e.model_name == model_name})
        return f"{model_name}={'|'.join(ids)}"

    def model_list(self) -> list[dict]:
        """litellm's `model_list`, with each key read from its environment variable."""
        out = []
        for e in self.endpoints:
            params: dict[str, Any] = {"model": e.model}
            if e.api_base:
                params["api_base"] = e.api_base
            # a local server started without --api-key takes any key; litellm's openai client needs one
            params["api_key"] = os.environ[e.api_key_env] if e.api_key_env else "not-needed"
            for name in ("rpm", "tpm", "max_parallel_requests", "weight"):
                if getattr(e, name) is not None:
                    params[name] = getattr(e, name)
            out.append({"model_name": e.model_name, "litellm_params": params})
        return out


def _read_config_file(path: Path) -> dict:
    if not path.is_file():
        raise LLMConfigError(f"router config {path} does not exist; write one (YAML or TOML) or drop the option")
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        if suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            raise LLMConfigError(f"router config {path}: use a .yaml, .yml or .toml file")
    except LLMConfigError:
        raise
    except Exception as exc:  # yaml.YAMLError, tomllib.TOMLDecodeError
        kind = "TOML" if suffix == ".toml" else "YAML"
        raise LLMConfigError(f"router config {path} is not valid {kind}: {' '.join(str(exc).split())[:300]}") from None
    if not isinstance(data, dict):
        raise LLMConfigError(f"router config {path} must be a mapping with a model_list")
    return data


def _check_types(where: str, data: dict, allowed: dict) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise LLMConfigError(f"{where}: unknown key {', '.join(map(repr, unknown))}; known keys: {', '.join(allowed)}")
    for k, v in data.items():
        if isinstance(v, bool) or not isinstance(v, allowed[k]):
            raise LLMConfigError(f"{where}: {k} must be {_type_name(allowed[k])}, got {v!r}")


def _type_name(t) -> str:
    names = {str: "a string", int: "an integer", float: "a number", list: "a list"}
    return " or ".join(names[x] for x in (t if isinstance(t, tuple) else (t,)))


def load_router_config(path: str | Path) -> RouterConfig:
    """Read and check a router config (YAML or TOML) before any call: a clear `LLMConfigError` naming the file
    and the entry if the file is missing or malformed, a provider is unknown, or a key's variable is unset.

    Format (YAML; the TOML has the same keys, the list as `[[model_list]]` tables)::

        routing_strategy: least-busy  # simple-shuffle (default), least-busy, latency-based-routing, ...
        num_retries: 3                # tries on other endpoints before a call waits and retries
        timeout: 120                  # seconds per request
        allowed_fails: 1              # failures in a minute before an endpoint cools down
        cooldown_time: 30             # seconds an endpoint is left out after that
        model_list:
          - model_name: local-llm     # what requests ask for (the model of the explain/score stage)
            model: openai/Qwen2.5-7B-Instruct   # the litellm model id at that endpoint
            api_base: http://10.0.0.1:8000/v1
            api_key_env: VLLM_API_KEY # optional: the variable holding its key (keys are never in the file)
            max_parallel_requests: 16 # optional; also rpm, tpm, weight
    """
    path = Path(path)
    data = _read_config_file(path)
    _check_types(f"router config {path}", data, _ROUTER_KEYS)
    entries = data.get("model_list")
    if not entries:
        raise LLMConfigError(f"router config {path} has no model_list; list at least one endpoint")
    strategy = data.get("routing_strategy", "simple-shuffle")
    if strategy not in ROUTING_STRATEGIES:
        raise LLMConfigError(
            f"router config {path}: unknown routing_strategy {strategy!r}; use one of {', '.join(ROUTING_STRATEGIES)}"
        )
    for k in ("num_retries", "allowed_fails"):
        if data.get(k, 0) < 0:
            raise LLMConfigError(f"router config {path}: {k} must be 0 or more")
    for k in ("timeout", "cooldown_time"):
        if data.get(k, 1) <= 0:
            raise LLMConfigError(f"router config {path}: {k} must be positive")
    litellm = _litellm()
    endpoints = []
    for i, entry in enumerate(entries, 1):
        where = f"router config {path}, model_list entry {i}"
        if not isinstance(entry, dict):
            raise LLMConfigError(f"{where} must be a mapping with model_name and model")
        if "api_key" in entry:
            raise LLMConfigError(
                f"{where}: api_key is not read from the file; put the key in an environment variable and name it with api_key_env"
            )
        _check_types(where, entry, _ENDPOINT_KEYS)
        for k in ("model_name", "model"):
            if not entry.get(k):
                raise LLMConfigError(f"{where} has no {k}")
        model, api_base = entry["model"], entry.get("api_base")
        if "/" not in model:
            raise LLMConfigError(f"{where}: model {model!r} is not provider/model, e.g. openai/Qwen2.5-7B-Instruct")
        try:
            litellm.get_llm_provider(model, api_base=api_base)
        except Exception as exc:
            raise LLMConfigError(
                f"{where}: model {model!r}: litellm knows no provider {model.split('/')[0]!r} "
                f"({str(exc).splitlines()[0][:160]}); write provider/model, e.g. openai/{model.split('/', 1)[-1]}"
            ) from None
        if api_base is not None and not api_base.startswith(("http://", "https://")):
            raise LLMConfigError(f"{where}: api_base {api_base!r} is not an http(s) URL")
        env = entry.get("api_key_env")
        if env and not os.environ.get(env):
            raise MissingCredentialsError(
                f"{where} needs the environment variable {env}, which is not set; export {env}=... before running"
            )
        endpoints.append(Endpoint(**entry))
    kwargs = {
        k: data[k]
        for k in ("routing_strategy", "num_retries", "timeout", "allowed_fails", "cooldown_time")
        if k in data
    }
    return RouterConfig(path=str(path), endpoints=tuple(endpoints), **kwargs)


_env_router: dict[str, Any] = {}


def env_router() -> RouterConfig | None:
    """The router config named by the environment variable `SAE_LLM_ROUTER` (None when unset), read once per file version."""
    path = os.environ.get(ROUTER_ENV)
    if not path:
        return None
    p = Path(path)
    stamp = (str(p), p.stat().st_mtime_ns if p.is_file() else None)
    if _env_router.get("stamp") != stamp:
        config = load_router_config(p)  # raises LLMConfigError: nothing is remembered
        _env_router.update(stamp=stamp, config=config)
    return _env_router["config"]


def make_router(config: RouterConfig):
    """A litellm `Router` over `config`'s endpoints."""
    litellm = _litellm()
    return litellm.Router(
        model_list=config.model_list(),
        routing_strategy=config.routing_strategy,
        num_retries=config.num_retries,
        timeout=config.timeout,
        allowed_fails=config.allowed_fails,
        cooldown_time=config.cooldown_time,
        retry_after=0,
    )


# ---------------------------------------------------------------------------------------------
# The workspace cache and usage log


JOURNAL_DIR = "llm-journal"  # in the workspace's data folder
_journal_ids = itertools.count()


class _Journal:
    """One client's write-ahead file: JSON lines `{"reply": entry | None, "usage": row}` not yet merged
    into the workspace. Its writer holds an exclusive flock from before the file has its name until
    after the file is removed, so a free lock on a `*.jsonl` file means its writer died."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{os.getpid()}-{secrets.token_hex(4)}-{next(_journal_ids)}"
        tmp = folder / f"{name}.tmp"
        self.fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.path = folder / f"{name}.jsonl"
            os.rename(tmp, self.path)  # only now can a recovering client see it, already locked
        except BaseException:
            os.close(self.fd)
            tmp.unlink(missing_ok=True)
            raise

    def append(self, data: bytes, sync: bool) -> None:
        """Append `data`; with `sync`, also to the disk (not only the OS's cache) before returning."""
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]
        if sync:
            os.fsync(self.fd)

    def remove(self) -> None:
        """Delete the file (its rows are stored), then release the lock."""
        self.path.unlink(missing_ok=True)
        os.close(self.fd)


def _remove_if_unlocked(path: Path, min_age_s: float) -> None:
    """Delete `path` if nobody holds its lock and it is older than `min_age_s` (a new one is not locked yet)."""
    try:
        if time.time() - path.stat().st_mtime < min_age_s:
            return
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        path.unlink(missing_ok=True)
    except BlockingIOError:
        pass
    finally:
        os.close(fd)


def _read_journal(fd: int, path: Path) -> tuple[list[dict], list[dict]]:
    """(replies, usage rows) of a journal; a line cut short by a crash is skipped."""
    chunks = []
    offset = 0
    while chunk := os.pread(fd, 1 << 20, offset):
        chunks.append(chunk)
        offset += len(chunk)
    replies, usage = [], []
    for line in b"".join(chunks).splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            log.warning("skipping a torn line of %s (the process died while writing it)", path)
            continue
        if rec.get("reply") is not None:
            replies.append(rec["reply"])
        usage.append(rec["usage"])
    return replies, usage


class ResponseCache:
    """Replies by cache key: an in-memory map in front of the workspace's `llm_responses` table.

    `record` keeps each call's usage row (and new reply) in memory and in a journal file (see the
    module docstring); `flush()` merges them into the workspace in one write session.
    With `workspace=None` the cache lives in memory only.
    """

    def __init__(self, workspace: Path | None):
        self.workspace = Path(workspace) if workspace is not None else None
        self._mem: dict[str, dict] = {}
        self._known_absent: set[str] = set()
        self._pending: list[dict] = []
        self._usage: list[dict] = []
        self._journal: _Journal | None = None
        self._unmerged: list[_Journal] = []  # journals of a failed flush: still locked, merged by the next one
        self._journal_failed = False
        self._recovered = workspace is None
        self._lock = threading.Lock()

    @property
    def journal_dir(self) -> Path | None:
        """Where this workspace's journals live (None without a workspace)."""
        if self.workspace is None:
            return None
        from core.store.schema import data_dir

        return data_dir(self.workspace) / JOURNAL_DIR

    def recover(self) -> int:
        """Merge the journals of dead processes into the workspace (once per cache); returns how many.

        A journal whose lock is held belongs to a live client and is left alone. A failure to write
        (e.g. the workspace stays locked) is logged and the journal kept for the next client.
        """
        if self._recovered:
            return 0
        self._recovered = True
        folder = self.journal_dir
        if folder is None or not folder.is_dir():
            return 0
        from core import store

        for tmp in folder.glob("*.tmp"):  # a writer died between creating and naming its journal: empty
            _remove_if_unlocked(tmp, min_age_s=60.0)
        merged = 0
        for path in sorted(folder.glob("*.jsonl")):
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its writer is alive
                try:
                    if os.stat(path).st_ino != os.fstat(fd).st_ino:
                        continue
                except FileNotFoundError:
                    continue  # merged and removed by someone else meanwhile
                replies, usage = _read_journal(fd, path)
                try:
                    if replies or usage:
                        store.write_llm_records(self.workspace, replies, usage, journals=[path])
                except Exception as exc:
                    log.warning(
                        "could not merge the LLM journal %s into %s (kept for later): %s", path, self.workspace, exc
                    )
                    continue
                path.unlink(missing_ok=True)
                merged += 1
                log.info(
                    "merged %d replies and %d usage rows left by a stopped run (%s)",
                    len(replies),
                    len(usage),
                    path.name,
                )
            finally:
                os.close(fd)
        return merged

    def prefetch(self, keys: Sequence[str]) -> None:
        """Load the stored replies of `keys` in one read session (absent keys are remembered as absent)."""
        self.recover()
        want = [k for k in dict.fromkeys(keys) if k not in self._mem and k not in self._known_absent]
        if not want or self.workspace is None or not self.workspace.exists():
            self._known_absent.update(want)
            return
        from core import store

        found = store.read_llm_responses(self.workspace, want)
        with self._lock:
            self._mem.update(found)
            self._known_absent.update(k for k in want if k not in found)

    def get(self, key: str) -> dict | None:
        """The stored reply of `key` or None."""
        if key not in self._mem and key not in self._known_absent:
            self.prefetch([key])
        return self._mem.get(key)

    def record(self, entry: dict | None, usage: dict) -> None:
        """Keep one call's usage row and its new reply `entry` (None for a cache hit, a failure, or use_cache=False).

        Before this returns both are in the journal file, fsynced unless the call was a cache hit;
        `flush()` stores them in the workspace.
        """
        data = (json.dumps({"reply": entry, "usage": usage}, default=str) + "\n").encode()
        with self._lock:
            if entry is not None:
                self._mem[entry["key"]] = entry
                self._known_absent.discard(entry["key"])
                self._pending.append(entry)
            self._usage.append(usage)
            if self.workspace is not None and not self._journal_failed:
                try:
                    if self._journal is None:
                        self._journal = _Journal(self.journal_dir)
                    self._journal.append(data, sync=not usage["cached"])
                except OSError as exc:  # e.g. a read-only folder: the rows still reach the workspace at flush
                    self._journal_failed = True
                    log.warning(
                        "cannot write the LLM journal in %s (%s); replies are kept in memory until flushed",
                        self.journal_dir,
                        exc,
                    )

    @property
    def calls_pending(self) -> int:
        """Calls recorded since the last flush."""
        return len(self._usage)

    def flush(self) -> None:
        """Write buffered replies and usage rows to the workspace in one transaction, then drop their journal."""
        self.recover()
        with self._lock:
            pending, usage = self._pending, self._usage
            journals = self._unmerged + ([self._journal] if self._journal is not None else [])
            self._pending, self._usage, self._unmerged, self._journal = [], [], [], None
        if self.workspace is None or not (pending or usage):
            return
        from core import store

        try:
            store.write_llm_records(self.workspace, pending, usage, journals=[j.path for j in journals])
        except BaseException:
            with self._lock:  # keep them for the next attempt
                self._pending[:0] = pending
                self._usage[:0] = usage
                self._unmerged[:0] = journals
            raise
        for j in journals:
            j.remove()


# ---------------------------------------------------------------------------------------------
# The client


def _logprobs_of(choice: Any) -> list[TokenLogprob] | None:
    lp = getattr(choice, "logprobs", None)
    if lp is None:
        return None
    content = lp.get("content") if isinstance(lp, dict) else getattr(lp, "content", None)
    if not content:
        return None
    out = []
    for t in content:
        get = t.get if isinstance(t, dict) else lambda k, _t=t: getattr(_t, k, None)
        alts = get("top_logprobs") or []
        top = [
            (
                (a.get("token") if isinstance(a, dict) else a.token),
                float(a.get("logprob") if isinstance(a, dict) else a.logprob),
            )
            for a in alts
        ]
        out.append(TokenLogprob(str(get("token")), float(get("logprob")), top))
    return out


def _entry_to_reply(entry: dict, cached: bool) -> LLMReply:
    lps = entry.get("logprobs")
    return LLMReply(
        text=entry.get("text"),
        cached=cached,
        usage=Usage(entry.get("prompt_tokens") or 0, entry.get("completion_tokens") or 0, entry.get("cost")),
        finish_reason=entry.get("finish_reason"),
        logprobs=[TokenLogprob(t["token"], t["logprob"], [tuple(a) for a in t["top"]]) for t in lps] if lps else None,
        key=entry["key"],
        model=entry["model"],
    )


class LLMClient:
    """Async litellm calls with a workspace cache, bounded concurrency, retries and accounting.

    Use one client per run: `await client.acomplete(...)` or `await client.acomplete_many(requests)`,
    then `client.flush()`. Every call is in the client's journal when it returns; `flush()` (also run
    every `flush_every` calls, cache hits and failures included) stores the journal in the workspace.
    `stats` counts calls, cache hits, tokens and cost of this client's lifetime.
    """

    def __init__(
        self,
        workspace: Path | None = None,
        concurrency: int = 8,
        max_retries: int = 4,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        timeout_s: float = 120.0,
        flush_every: int = 64,
        use_cache: bool = True,
        sleep: Callable[[float], Any] | None = None,
        router: RouterConfig | str | Path | None = None,
    ):
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        # checked here, before any call: a bad file fails the run before it starts
        if router is None:
            self.router = env_router()
        else:
            self.router = router if isinstance(router, RouterConfig) else load_router_config(router)
        self._router: Any = None
        self._router_loop: asyncio.AbstractEventLoop | None = None
        self.cache = ResponseCache(workspace)
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.timeout_s = timeout_s
        self.flush_every = flush_every
        self.use_cache = use_cache
        self._sleep = sleep or asyncio.sleep
        self._sem: asyncio.Semaphore | None = None
        self._sem_loop: asyncio.AbstractEventLoop | None = None
        self._checked: set[str] = set()
        self._flushing = False
        self.stats = {
            "calls": 0,
            "cached": 0,
            "failed": 0,
            "retries": 0,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "cost": 0.0,
        }

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._sem is None or self._sem_loop is not loop:
            self._sem, self._sem_loop = asyncio.Semaphore(self.concurrency), loop
        return self._sem

    def routed(self, model: str) -> bool:
        """Whether calls to `model` go through the router (it is one of the router config's model names)."""
        return self.router is not None and model in self.router.model_names

    def _router_for_loop(self):
        loop = asyncio.get_running_loop()  # the Router's HTTP clients belong to one event loop
        if self._router is None or self._router_loop is not loop:
            self._router, self._router_loop = make_router(self.router), loop
        return self._router

    def key_of(self, req: LLMRequest) -> str:
        """The cache key of `req` (a routed model is keyed by its name and its endpoints' model ids)."""
        model = self.router.key_model(req.model) if self.routed(req.model) else req.model
        return cache_key(model, req.messages, req.params)

    def check(self, model: str, params: dict | None = None) -> None:
        """`check_credentials` once per model for this client (routed models were checked with their config)."""
        params = params or {}
        if model not in self._checked and not self.routed(model):
            check_credentials(
                model, api_key=params.get("api_key"), api_base=params.get("api_base") or params.get("base_url")
            )
            self._checked.add(model)

    async def acomplete(
        self,
        model: str,
        messages: list[dict],
        *,
        purpose: str = "",
        dictionary: str | None = None,
        latent: int | None = None,
        **params: Any,
    ) -> LLMReply:
        """One chat completion (cached, retried, counted). `params` are litellm params (temperature, max_tokens, logprobs, ...)."""
        return await self._one(LLMRequest(model, messages, params, purpose, dictionary, latent))

    async def acomplete_many(self, requests: Sequence[LLMRequest], progress: Progress | None = None) -> list[LLMReply]:
        """Run `requests` concurrently (at most `concurrency` at once); replies in request order.

        `progress("LLM calls", done, total)` (core.progress) after each reply."""
        if self.use_cache:
            keys = [self.key_of(r) for r in requests]
            await asyncio.to_thread(self.cache.prefetch, keys)
        done = 0

        async def run(r: LLMRequest) -> LLMReply:
            nonlocal done
            reply = await self._one(r)
            done += 1
            if progress is not None:
                progress("LLM calls", done, len(requests))
            return reply

        replies = await asyncio.gather(*(run(r) for r in requests))
        await asyncio.to_thread(self.flush)
        return list(replies)

    def flush(self) -> None:
        """Store the calls made since the last flush (replies and usage rows) in the workspace."""
        self.cache.flush()

    async def _one(self, req: LLMRequest) -> LLMReply:
        self.check(req.model, req.params)
        key = self.key_of(req)
        stored = self.cache.get(key) if self.use_cache else None
        entry = None
        if stored is not None:
            reply, latency = _entry_to_reply(stored, cached=True), 0.0
        else:
            async with self._semaphore():
                t0 = time.perf_counter()
                reply = await self._call_with_retries(req, key)
                latency = time.perf_counter() - t0
            if reply.error is None and self.use_cache:
                entry = {
                    "key": key,
                    "model": req.model,
                    "request": _request_record(req.model, req.messages, req.params),
                    "text": reply.text,
                    "finish_reason": reply.finish_reason,
                    "logprobs": [asdict(t) for t in reply.logprobs] if reply.logprobs else None,
                    "prompt_tokens": reply.usage.prompt_tokens,
                    "completion_tokens": reply.usage.completion_tokens,
                    "cost": reply.usage.cost,
                }
        self.cache.record(entry, self._account(req, reply, latency))  # on disk before the reply is handed back
        if self.cache.calls_pending >= self.flush_every and not self._flushing:
            self._flushing = True  # one merge at a time; calls finishing meanwhile wait for the next
            try:
                await asyncio.to_thread(self.flush)
            finally:
                self._flushing = False
        return reply

    def _account(self, req: LLMRequest, reply: LLMReply, latency: float) -> dict:
        """Count the call in `stats`; returns its `llm_usage` row."""
        s = self.stats
        s["calls"] += 1
        s["cached"] += int(reply.cached)
        s["failed"] += int(reply.error is not None)
        if not reply.cached:
            s["prompt_tokens"] += reply.usage.prompt_tokens
            s["completion_tokens"] += reply.usage.completion_tokens
            s["cost"] += reply.usage.cost or 0.0
        return {
            "key": reply.key,
            "model": req.model,
            "purpose": req.purpose,
            "dictionary": req.dictionary,
            "latent": req.latent,
            "cached": reply.cached,
            "prompt_tokens": reply.usage.prompt_tokens,
            "completion_tokens": reply.usage.completion_tokens,
            # a cache hit is free now; its original cost stays in llm_responses
            "cost": 0.0 if reply.cached else reply.usage.cost,
            "latency_s": latency,
            "error": reply.error,
        }

    async def _call_with_retries(self, req: LLMRequest, key: str) -> LLMReply:
        litellm = _litellm()
        params = dict(req.params)
        params.setdefault("timeout", self.timeout_s)
        last = ""
        for attempt in range(self.max_retries + 1):
            try:
                if self.routed(req.model):  # the router retries on the other endpoints itself
                    resp = await self._router_for_loop().acompletion(
                        model=req.model, messages=req.messages, drop_params=True, **params
                    )
                else:
                    resp = await litellm.acompletion(
                        model=req.model, messages=req.messages, num_retries=0, drop_params=True, **params
                    )
            except Exception as exc:
                name = type(exc).__name__
                if name in FATAL_ERRORS:
                    raise LLMConfigError(f"{req.model}: {name}: {_short(exc)}") from None
                if name in TRANSIENT_ERRORS or any(c.__name__ in TRANSIENT_ERRORS for c in type(exc).__mro__):
                    last = f"{name}: {_short(exc)}"
                    if attempt < self.max_retries:
                        self.stats["retries"] += 1
                        delay = min(self.max_backoff_s, self.backoff_s * 2**attempt) * (0.5 + random.random() / 2)
                        log.info("%s on %s (attempt %d); retrying in %.1f s", name, req.model, attempt + 1, delay)
                        await self._sleep(delay)
                        continue
                    return LLMReply(
                        None,
                        False,
                        Usage(),
                        error=f"gave up after {attempt + 1} attempts: {last}",
                        transient=True,
                        key=key,
                        model=req.model,
                    )
                return LLMReply(None, False, Usage(), error=f"{name}: {_short(exc)}", key=key, model=req.model)
            return _reply_of(resp, key, req.model)
        raise AssertionError("unreachable")


def _short(exc: Exception) -> str:
    return " ".join(str(exc).split())[:300]


def _reply_of(resp: Any, key: str, model: str) -> LLMReply:
    litellm = _litellm()
    choice = resp.choices[0]
    text = getattr(choice.message, "content", None)
    usage = getattr(resp, "usage", None)
    try:
        cost = float(litellm.completion_cost(completion_response=resp))
    except Exception:  # unknown price (custom/local models): say so rather than guess
        cost = None
    return LLMReply(
        text=text,
        cached=False,
        usage=Usage(
            int(getattr(usage, "prompt_tokens", 0) or 0), int(getattr(usage, "completion_tokens", 0) or 0), cost
        ),
        finish_reason=getattr(choice, "finish_reason", None),
        logprobs=_logprobs_of(choice),
        key=key,
        model=model,
    )


def supports_logprobs(model: str) -> bool:
    """Whether litellm lists `logprobs` among the model's supported params (the provider may still omit them);
    for a model named by the `SAE_LLM_ROUTER` config, whether every endpoint's model does."""
    router = env_router()
    ids = [e.model for e in router.endpoints if e.model_name == model] if router is not None else []
    try:
        return all("logprobs" in (_litellm().get_supported_openai_params(model=m) or []) for m in ids or [model])
    except Exception:
        return False


# ---------------------------------------------------------------------------------------------
# Synchronous conveniences


def run_sync(coro):
    """Run a coroutine to completion from synchronous code (CLI, Streamlit script thread).

    If this thread already runs an event loop (Jupyter, a test harness such as Playwright's sync
    API), the coroutine runs on a fresh loop in a worker thread instead, so callers never need to know.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def complete(
    workspace: Path | None,
    model: str,
    messages: list[dict],
    router: RouterConfig | str | Path | None = None,
    **params: Any,
) -> LLMReply:
    """One cached, retried chat completion from synchronous code (flushes the cache before returning)."""
    client = LLMClient(workspace, router=router)
    try:
        return run_sync(client.acomplete(model, messages, **params))
    finally:
        client.flush()


def complete_many(
    workspace: Path | None,
    requests: Sequence[LLMRequest],
    concurrency: int = 8,
    progress: Progress | None = None,
    router: RouterConfig | str | Path | None = None,
) -> list[LLMReply]:
    """Many cached, retried chat completions from synchronous code, at most `concurrency` at once
    (through `router`'s endpoints for the models it names)."""
    client = LLMClient(workspace, concurrency=concurrency, router=router)
    return run_sync(client.acomplete_many(requests, progress))
