"""JSON configs: loading, dotted overrides, required keys and registry resolution.

A config is plain JSON. Every pluggable part is a block ``{"type": name, "args": {...}}``
whose ``type`` is looked up in a package namespace (the registry), e.g. ``hw_asr.model``.
Nothing in a config is ever evaluated as code.
"""

import copy
import dataclasses
import difflib
import importlib
import inspect
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import Any

from hw_asr.files import write_json


class ConfigError(ValueError):
    """A config that cannot be used, with a message that says where and why."""


def check_known_keys(block: Mapping[str, Any], known: Iterable[str], where: str) -> None:
    """Refuse a key of ``block`` that nothing reads (a typo would otherwise be ignored in silence),
    suggesting the nearest known key."""
    for key in block:
        if key not in known:
            near = difflib.get_close_matches(key, sorted(known), n=1)
            raise ConfigError(
                f"{where}.{key}: unknown key{f', did you mean {near[0]!r}?' if near else ''} "
                f"(known: {', '.join(sorted(known))})"
            )


def deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``base``: dicts merge key by key, anything else replaces.

    A block whose ``type`` differs from the base's replaces it whole (its ``args``
    belong to another class). ``null`` removes an inherited key.
    """
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value is None and key in out:
            del out[key]
            continue
        old = out.get(key)
        if isinstance(value, dict) and isinstance(old, dict) and value.get("type", old.get("type")) == old.get("type"):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_config(path: str | os.PathLike, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a JSON config; a syntax error names the file, line and column.

    ``"base": "other.json"`` (or a list, merged in order) inherits from other
    configs, with paths relative to this file; this file's keys win.
    """
    cfg = _read_json(path)
    bases = cfg.pop("base", [])
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: 'base' must be a path or a list of paths")
    merged = {}
    here = Path(path).resolve()
    for base in bases:
        base_path = (here.parent / base).resolve()
        if base_path in _seen or base_path == here:
            raise ConfigError(f"{path}: 'base' {base} includes itself")
        merged = deep_merge(merged, load_config(base_path, (*_seen, here)))
    return deep_merge(merged, cfg)


def _read_json(path: Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from None
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: a config must be a JSON object, got {type(cfg).__name__}")
    return cfg


def _parse_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _step(node: Any, key: str, dotted: str) -> str | int:
    """One step of a dotted path: dict key, or list index."""
    if isinstance(node, list):
        try:
            return int(key)
        except ValueError:
            raise ConfigError(f"override {dotted!r}: {key!r} indexes a list, use a number") from None
    if isinstance(node, dict):
        return key
    raise ConfigError(f"override {dotted!r}: cannot descend into a {type(node).__name__} at {key!r}")


def apply_overrides(cfg: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` strings; values parse as JSON, else stay strings.

    Numeric path parts index lists (``data.train.datasets.0.args.limit=8``).
    Missing dict keys are created, so new options can be added from the command line.
    """
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.path=value")
        dotted, raw = item.split("=", 1)
        keys = dotted.strip().split(".")
        if not all(keys):
            raise ConfigError(f"override {item!r} has an empty key")
        node = cfg
        for key in keys[:-1]:
            k = _step(node, key, dotted)
            if isinstance(node, list):
                if not -len(node) <= k < len(node):
                    raise ConfigError(f"override {dotted!r}: index {k} out of range")
                node = node[k]
            else:
                node = node.setdefault(k, {})
        k = _step(node, keys[-1], dotted)
        if isinstance(node, list) and not -len(node) <= k < len(node):
            raise ConfigError(f"override {dotted!r}: index {k} out of range")
        node[k] = _parse_value(raw)
    return cfg


_MISSING = object()


def get_path(cfg: Any, dotted: str, default: Any = _MISSING) -> Any:
    """Value at a dotted path; a missing required key is an error naming the path."""
    node = cfg
    for key in dotted.split("."):
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            if default is _MISSING:
                raise ConfigError(f"missing required config key '{dotted}'")
            return default
    return node


def registry_names(module: ModuleType) -> list[str]:
    """Public classes and functions a registry module exports."""
    names = getattr(module, "__all__", None)
    if names is None:
        names = [
            n
            for n, v in vars(module).items()
            if not n.startswith("_") and (inspect.isclass(v) or inspect.isfunction(v))
        ]
    return sorted(names)


def lookup(type_name: str, modules: Any, where: str) -> Any:
    """Find ``type_name`` in the first registry module that has it."""
    modules = [importlib.import_module(m) if isinstance(m, str) else m for m in modules]
    for module in modules:
        if type_name in registry_names(module):
            return getattr(module, type_name)
    known = sorted({n for m in modules for n in registry_names(m)})
    raise ConfigError(
        f"{where}: unknown type {type_name!r}; known types in "
        f"{', '.join(m.__name__ for m in modules)}: {', '.join(known)}"
    )


def accepted_arguments(target: Callable) -> list[str] | None:
    """The keyword arguments a class or function takes, following ``**kwargs`` up the base
    classes' ``__init__`` (a dataset passes ``limit`` on to ``BaseDataset``); None when it
    takes any keyword (a ``**kwargs`` that reaches no base class that names its arguments)."""
    chain = [c for c in target.__mro__ if "__init__" in vars(c)] if inspect.isclass(target) else [target]
    names = []
    for part in chain:
        if part is object:
            return names
        try:
            parameters = inspect.signature(part.__init__ if inspect.isclass(part) else part).parameters.values()
        except (TypeError, ValueError):
            return None
        names += [
            p.name
            for p in parameters
            if p.name != "self" and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        ]
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            return names
    return None


def check_argument_names(target: Callable, args: Mapping[str, Any], where: str, type_name: str) -> None:
    """Refuse an argument ``target`` does not take, naming the nearest it does: before anything is built."""
    accepted = accepted_arguments(target)
    if accepted is None:
        return
    for key in args:
        if key not in accepted:
            near = difflib.get_close_matches(key, accepted, n=1)
            raise ConfigError(
                f"{where}: unexpected argument {key!r} for {type_name}"
                f"{f', did you mean {near[0]!r}?' if near else ''} (accepts: {', '.join(accepted)})"
            )


@dataclass(frozen=True)
class Block:
    """A checked ``{"type": name, "args": {...}}`` block: the class (or function) its type names in a
    registry, its arguments, and where it is in the config (``where``, for messages). Nested blocks in the
    arguments (an augmentation's ``augmentation``, ``Sequential``'s list) are Blocks too when the block was
    read with ``nested=True``; the caller builds those and passes them in (``builder.build_wave_augs``)."""

    where: str
    type_name: str
    cls: Callable
    args: Mapping[str, Any]

    @classmethod
    def of(cls, spec: Any, modules: Any, where: str, nested: bool = False) -> "Block":
        """Look ``spec``'s type up in ``modules`` (a registry module or a list of them) and check the names of
        its arguments: a type that does not exist or an argument it does not take is a ConfigError naming
        ``where``."""
        if not isinstance(spec, dict) or "type" not in spec:
            raise ConfigError(f'{where}: expected a block {{"type": ..., "args": {{...}}}}, got {spec!r}')
        unknown_keys = set(spec) - {"type", "args"}
        if unknown_keys:
            raise ConfigError(f"{where}: unexpected keys {sorted(unknown_keys)} (only 'type' and 'args')")
        args = spec.get("args") or {}
        if not isinstance(args, dict):
            raise ConfigError(f"{where}.args must be an object")
        target = lookup(spec["type"], modules if isinstance(modules, (list, tuple)) else [modules], f"{where}.type")
        check_argument_names(target, args, f"{where}.args", spec["type"])
        args = copy.deepcopy(args)
        if nested:
            args = {key: _nested(value, modules, f"{where}.args.{key}") for key, value in args.items()}
        return cls(where, spec["type"], target, MappingProxyType(args))

    def without(self, *keys: str) -> "Block":
        """The same block without the arguments ``keys`` (the framework builds and passes them itself)."""
        return dataclasses.replace(self, args=MappingProxyType({k: v for k, v in self.args.items() if k not in keys}))

    def with_args(self, **args: Any) -> "Block":
        """The same block with ``args`` set (the framework's own values for some of its arguments)."""
        return dataclasses.replace(self, args=MappingProxyType({**self.args, **args}))

    def build(self, *args: Any, **extra: Any) -> Any:
        """The object: ``cls(*args, **block args, **extra)``. ``extra`` are arguments the framework supplies
        (the text encoder of a dataset, ...); the config may not set them too. A value the class refuses
        (its ValueError) is a ConfigError naming the block."""
        clash = set(self.args) & set(extra)
        if clash:
            raise ConfigError(f"{self.where}.args: {sorted(clash)} are set by the framework, remove them")
        check_argument_names(self.cls, extra, f"{self.where}.args", self.type_name)
        kwargs = {**copy.deepcopy(dict(self.args)), **extra}
        try:
            signature = inspect.signature(self.cls)
        except (TypeError, ValueError):
            signature = None
        if signature is not None:
            try:
                signature.bind(*args, **kwargs)
            except TypeError as e:
                accepted = accepted_arguments(self.cls) or []
                raise ConfigError(
                    f"{self.where}.args: {e} for {self.type_name} (accepts: {', '.join(accepted)})"
                ) from None
        try:
            return self.cls(*args, **kwargs)
        except ConfigError:
            raise
        except ValueError as e:  # a value the class refuses (a negative learning rate, an unknown mode, ...)
            raise ConfigError(f"{self.where}.args ({self.type_name}): {e}") from e


def _is_block(value: Any) -> bool:
    return isinstance(value, dict) and "type" in value


def _nested(value: Any, modules: Any, where: str) -> Any:
    """An argument that is a block, or a non-empty list of blocks, read as Block(s)."""
    if _is_block(value):
        return Block.of(value, modules, where, nested=True)
    if isinstance(value, list) and value and all(_is_block(v) for v in value):
        return [Block.of(v, modules, f"{where}.{i}", nested=True) for i, v in enumerate(value)]
    return value


def resolve(spec: Any, modules: Any, where: str, *args: Any, **extra: Any) -> Any:
    """Build the object a ``{"type", "args"}`` block describes (:meth:`Block.of`, then :meth:`Block.build`).

    ``extra`` keyword arguments are supplied by the framework (e.g. the text
    encoder for datasets); ``args`` from the config override nothing of them.
    Argument mistakes are reported against the config path ``where``.
    """
    return Block.of(spec, modules, where).build(*args, **extra)


def write_config(cfg: Mapping[str, Any], path: str | os.PathLike) -> None:
    """The config as JSON, written atomically (a run folder never holds half a config.json)."""
    write_json(path, cfg)
