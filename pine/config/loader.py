"""Load ``config.multi_alpha.yml``: .env, ``${VAR}`` interpolation, validation, overrides, contract map.

Every problem becomes one line of a :class:`ConfigError` that names its key path; the
error carries the file. No message ever contains a value read from the file or the
environment, so secrets cannot leak through errors.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Hashable
from pathlib import Path
from types import NoneType, UnionType
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from dotenv import load_dotenv
from pydantic import BaseModel, ValidationError

from pine.config.schema import PineConfig
from pine.contracts import ContractMap, ContractMapError, load_contract_map

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIG = REPO_ROOT / "data" / "config.multi_alpha.example.yml"
_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")
# Fields the loader fills in; a file must not set them.
_LOADER_FIELDS = ("source", "env_files")


class ConfigError(ValueError):
    """An unusable configuration. ``errors`` holds one line per problem, each naming a key path."""

    def __init__(self, source: Path | None, errors: list[str]) -> None:
        self.source = source
        self.errors = errors
        where = f"{source}: " if source else ""
        super().__init__(where + ("; ".join(errors) if len(errors) == 1 else f"{len(errors)} errors:\n  "
                                  + "\n  ".join(errors)))


def default_config_path() -> Path:
    """``$PINE_CONFIG``, else ``./config.multi_alpha.yml``, else the shipped example."""
    env = os.environ.get("PINE_CONFIG")
    if env:
        return Path(env)
    local = Path("config.multi_alpha.yml")
    return local if local.exists() else EXAMPLE_CONFIG


def load_env_files(config_path: Path | None) -> list[Path]:
    """Load ``.env`` beside the config, then from the working directory; never override.

    A variable already in the environment keeps its value, and the file beside the config
    wins over the one in the working directory. Returns the files that were read.
    """
    candidates = []
    if config_path is not None:
        candidates.append(config_path.resolve().parent / ".env")
    candidates.append(Path.cwd().resolve() / ".env")
    loaded = []
    for env_file in dict.fromkeys(candidates):
        if env_file.is_file():
            load_dotenv(env_file, override=False)
            loaded.append(env_file)
    return loaded


def interpolate(value: Any, path: str, errors: list[str]) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string; unset without default is an error.

    Substituted values stay strings (the schema converts them: ``"30"`` → 30 for a number
    field), so an API key of digits is never turned into a number. A value that is exactly
    one ``${VAR}`` and resolves to the empty string becomes None ("not set").
    """
    if isinstance(value, dict):
        return {k: interpolate(v, f"{path}.{k}" if path else str(k), errors) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, f"{path}[{i}]", errors) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        name, default = m["name"], m["default"]
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        errors.append(f"{path}: environment variable {name} is not set (use ${{{name}:-default}} to allow that)")
        return ""

    result = _VAR.sub(sub, value)
    if result == "" and _VAR.fullmatch(value):
        return None
    return result


def load_config(path: Path | str | None = None, *, verify_contract_map: bool = True) -> PineConfig:
    """Read, interpolate and validate a config file; ConfigError lists every problem.

    With ``verify_contract_map`` (the default) every entry of ``instruments`` must agree with
    the contract map at ``contract_map_path``; the Dagster ``contract_map`` asset turns it off
    so that its asset check can report the disagreement instead.
    """
    source = Path(path) if path is not None else default_config_path()
    env_files = load_env_files(source)
    try:
        raw = yaml.load(source.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except FileNotFoundError:
        raise ConfigError(source, ["file not found (pass --config FILE or set PINE_CONFIG)"]) from None
    except OSError as exc:
        raise ConfigError(source, [f"cannot read the file: {exc.strerror or type(exc).__name__}"]) from None
    except UnicodeDecodeError:
        raise ConfigError(source, ["cannot read the file: not UTF-8 text"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, [_yaml_problem(exc)]) from None
    if not isinstance(raw, dict):
        found = "an empty file" if raw is None else f"a {type(raw).__name__}"
        raise ConfigError(source, [
            f"(top level): must be a mapping of sections (databento, redis, strategies, instruments, …), found {found}"
        ])
    errors = [f"{key}: unknown key (set by the loader, not the file)" for key in _LOADER_FIELDS if key in raw]
    data = interpolate(raw, "", errors)
    # Environment overrides named in DESIGN.md win over the file.
    if os.environ.get("REDIS_URL") and isinstance(data.get("redis") or {}, dict):
        data["redis"] = {**(data.get("redis") or {}), "url": os.environ["REDIS_URL"]}
    if os.environ.get("PINE_RUNTIME_DIR"):
        data["runtime_dir"] = os.environ["PINE_RUNTIME_DIR"]
    try:
        cfg = PineConfig.model_validate(data)
    except ValidationError as exc:
        # A key whose variable is unset has already been reported; its empty value would only add noise.
        reported = tuple(f"{e.split(': ', 1)[0]}{end}" for e in errors for end in (":", "."))
        errors += [line for e in exc.errors() for line in _describe(e) if not line.startswith(reported)]
    if errors:
        raise ConfigError(source, errors)
    base = source.resolve().parent
    cfg = cfg.model_copy(update={
        "source": source,
        "env_files": tuple(env_files),
        "contract_map_path": _resolve(base, cfg.contract_map_path),
        "models_path": _resolve(base, cfg.models_path),
        "runtime_dir": _resolve(Path.cwd(), cfg.runtime_dir),
    })
    if verify_contract_map:
        try:
            cmap = load_contract_map(cfg.contract_map_path)
        except ContractMapError as exc:
            raise ConfigError(source, [f"contract_map_path: {exc}"]) from None
        mismatches = contract_map_mismatches(cfg, cmap)
        if mismatches:
            raise ConfigError(source, mismatches)
    return cfg


def contract_map_mismatches(cfg: PineConfig, cmap: ContractMap) -> list[str]:
    """Every way ``cfg.instruments`` disagrees with the contract map, one line per key path.

    Compared: presence of the root, multiplier, tick size, parent symbol
    (``databento_product_id``) and exchange.
    """
    where = f"contract map {display_path(cmap.source)}" if cmap.source else "the contract map"
    problems: list[str] = []
    for root, spec in cfg.instruments.items():
        key = f"instruments.{root}"
        if root not in cmap:
            problems.append(f"{key}: root {root} is not in {where} (known roots: {', '.join(cmap.roots())})")
            continue
        ref = cmap[root]
        for field, mine, theirs in (("multiplier", spec.multiplier, ref.multiplier),
                                    ("tick_size", spec.tick_size, ref.tick_size)):
            if not math.isclose(mine, theirs, rel_tol=1e-9):
                problems.append(
                    f"{key}.{field}: {format_number(mine)} disagrees with {where} ({format_number(theirs)})"
                )
        if spec.databento_product_id != ref.parent:
            problems.append(f"{key}.databento_product_id: {spec.databento_product_id} disagrees with {where} "
                            f"({ref.parent})")
        if spec.exchange != ref.exchange:
            given = spec.exchange if "exchange" in spec.model_fields_set else f"not set, so {spec.exchange},"
            problems.append(f"{key}.exchange: {given} disagrees with {where} ({ref.exchange})")
    return problems


def format_number(x: float) -> str:
    """A contract spec number as written by people: ``0.00005``, ``50`` (no exponent, no trailing zeros)."""
    return f"{x:.10f}".rstrip("0").rstrip(".")


def display_path(p: Path) -> str:
    """``p`` relative to the working directory when it lies below it, else as given."""
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys: YAML would silently keep only the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[Hashable] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable) and key != "<<":
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    # PyYAML's own message quotes the offending line, which may hold a secret: keep position and problem only.
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or "cannot be parsed"
    context = getattr(exc, "context", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"not valid YAML{where}: {problem}" + (f" ({context})" if context else "")


def _resolve(base: Path, p: Path) -> Path:
    p = p.expanduser()
    return p if p.is_absolute() else base / p




def _describe(err: Any) -> list[str]:
    """Lines for one pydantic error: ``key.path: message`` (never the offending value)."""
    loc = tuple(err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    if not loc:
        # Model-level checks put the key path into each line of their message.
        return msg.splitlines()
    key = ".".join(str(p) for p in loc)
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(allowed)}"
        return [f"{key}: unknown key ({hint})"]
    if err["type"] == "missing":
        return [f"{key}: required key is missing"]
    return [f"{key}: {msg}"]


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys the schema accepts at ``loc`` (empty when ``loc`` is not a section)."""
    tp: Any = PineConfig
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            fields = {f.alias or n: f for n, f in tp.model_fields.items()}
            if part not in fields:
                return []
            tp = fields[part].annotation
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        else:
            return []
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [f.alias or n for n, f in tp.model_fields.items() if n not in _LOADER_FIELDS]
    return []


def _unwrap(tp: Any) -> Any:
    """``Annotated[X, ...]`` and ``X | None`` → ``X``."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, UnionType):
            rest = [a for a in get_args(tp) if a is not NoneType]
            if len(rest) != 1:
                return tp
            tp = rest[0]
        else:
            return tp
