"""Config files for tyro dataclasses: ``vla train --config recipe.yaml`` and ``vla bench --config bench.yaml``.

A config file is a flat YAML mapping whose keys are the command's flag names (``-`` or ``_``): ``lr: 1e-4``,
``cameras: [head]``, whatever group (nested dataclass) the field lives in -- the flags are flat on the command
line (``tyro.conf.OmitArgPrefixes``), and so are the files. Flags given explicitly on the command line override
the file: the file's values become the default instance of ``tyro.cli(cls, default=...)`` (tyro's documented
pattern for config files), so every flag the user typed wins and every other field comes from the file, then from
the dataclass defaults.

Flag names: a field's name, or the ``name`` of its ``tyro.conf.arg(...)`` annotation; a nested dataclass field
contributes its own fields (its ``arg(name=...)`` only titles the help box). Suppressed fields have no flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from common.names import did_you_mean


@dataclasses.dataclass(frozen=True)
class FlagField:
    """Where one flag's value lives: the chain of dataclass field names from the root, the field's type, and
    whether it is hidden from the command line (``tyro.conf.Suppress``: settable in files and Python only)."""

    path: tuple[str, ...]
    type: Any
    suppressed: bool = False


def _strip(tp: Any) -> tuple[Any, list]:
    """(the type without Annotated, its Annotated metadata)."""
    meta: list = []
    while typing.get_origin(tp) is typing.Annotated:
        meta += list(tp.__metadata__)
        tp = tp.__origin__
    return tp, meta


def _arg_name(meta: list) -> str | None:
    for m in meta:
        name = getattr(m, "name", None)
        if type(m).__name__ == "_ArgConfig" and name:
            return name
    return None


def _suppressed(meta: list) -> bool:
    import tyro

    marker = typing.get_args(tyro.conf.Suppress[int])[1]  # tyro's marker object inside Annotated
    return any(m is marker for m in meta)


def _add(out: dict[str, FlagField], name: str, field: FlagField, owner: str) -> None:
    """Register a flag; a hidden field that shares a visible flag's name is derived from it and dropped."""
    if name in out:
        if field.suppressed:
            return
        if not out[name].suppressed:
            raise ValueError(f"{owner}: flag --{name} is defined twice")
    out[name] = field


def flag_fields(cls: type) -> dict[str, FlagField]:
    """Flag name (underscores) -> :class:`FlagField`, for every field of ``cls`` and its nested groups.

    A hidden (Suppressed) field with the same name as a visible one (``DataConfig.seed`` under ``--seed``) is
    derived from it and not listed.

    Raises:
        ValueError: two visible fields share a flag name (a programming error in the config classes).
    """
    hints = typing.get_type_hints(cls, include_extras=True)
    out: dict[str, FlagField] = {}
    for f in dataclasses.fields(cls):
        tp, meta = _strip(hints[f.name])
        if dataclasses.is_dataclass(tp):
            for name, sub in flag_fields(tp).items():
                _add(out, name, FlagField((f.name, *sub.path), sub.type, sub.suppressed), cls.__name__)
            continue
        name = (_arg_name(meta) or f.name).replace("-", "_")
        _add(out, name, FlagField((f.name,), tp, _suppressed(meta)), cls.__name__)
    return out


def _members(tp: Any) -> list[Any]:
    """The non-None members of a union (or [tp]), each without Annotated."""
    tp, _ = _strip(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [_strip(a)[0] for a in typing.get_args(tp) if a is not type(None)]
    return [tp]


def _coerce(field: FlagField, value: Any) -> Any:
    members = _members(field.type)
    if any(typing.get_origin(m) is tuple for m in members):
        if isinstance(value, (str, int, float)):
            return (value,)  # `cameras: head,left_wrist` / `val_episodes: 3`
        if isinstance(value, list):
            return tuple(value)
    if Path in members and isinstance(value, str):
        return Path(value)
    return value


def named_number(item: str) -> tuple[str, float] | None:
    """``"NAME=NUMBER"`` -> (NAME stripped, float(NUMBER)), split at the last ``=``; None when the item has no
    ``=``, an empty NAME or a NUMBER float() rejects (the caller names its field and form in the error).

    Used by the ``--task-weights TASK=WEIGHT`` and ``--lr-scale MODULE=FACTOR`` flags.
    """
    name, sep, value = item.rpartition("=")
    try:
        number = float(value)
    except ValueError:
        return None
    return (name.strip(), number) if sep and name.strip() else None


def load_yaml(path: str | Path, what: str = "YAML file") -> Any:
    """``yaml.safe_load`` of a file, with one-line errors.

    Raises:
        FileNotFoundError: "{what} PATH does not exist". ValueError: "PATH: not valid YAML at line L, column C:
            PROBLEM" (never a traceback of the YAML parser).
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        raise ValueError(f"{path}: not valid YAML{where}: {problem}") from None


def read_config_file(path: str | Path, cls: type, legacy: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The flat ``{flag name: value}`` of a YAML config file for ``cls`` (values are validated later, by ``cls``).

    ``legacy`` maps old flag names to their current ones (files written before a rename keep loading).

    Raises:
        FileNotFoundError: no file. ValueError: invalid YAML (one line naming the file, line and column), not a
            mapping, an unknown key (with the closest flag name), or a ``config`` key inside the file.
    """
    path = Path(path)
    raw = load_yaml(path, "config file")
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ValueError(f"{path}: expected a mapping of {cls.__name__} fields, got {type(raw).__name__}")
    fields = flag_fields(cls)
    legacy = dict(legacy or {})
    values: dict[str, Any] = {}
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        name = legacy.get(name, name)
        if name == "config":
            raise ValueError(f"{path}: key 'config' is not allowed inside a config file")
        if name not in fields:
            raise ValueError(
                f"{path}: unknown key {key!r}{did_you_mean(name, fields)}; known keys: {', '.join(sorted(fields))}"
            )
        values[name] = _coerce(fields[name], value)
    return values


def _group_type(cls: type, name: str) -> type:
    tp, _ = _strip(typing.get_type_hints(cls, include_extras=True)[name])
    return tp


def build(cls: type, flat: Mapping[str, Any], validate: bool = True) -> Any:
    """An instance of ``cls`` from flat ``{flag name: value}`` (missing fields take their defaults).

    ``validate=False`` builds it without calling any ``__post_init__`` (tyro's default instance), with
    ``tyro.MISSING`` for required fields the values do not give.

    Raises:
        ValueError / TypeError: from the dataclasses' own validation (``validate=True``), e.g. a required field
            missing.
    """
    import tyro

    fields = flag_fields(cls)
    by_path = {fields[name].path: value for name, value in flat.items() if name in fields}

    def make(tp: type, prefix: tuple[str, ...]) -> Any:
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(tp):
            path = (*prefix, f.name)
            sub = _group_type(tp, f.name)
            if dataclasses.is_dataclass(sub):
                kwargs[f.name] = make(sub, path)
            elif path in by_path:
                kwargs[f.name] = by_path[path]
            elif not validate:
                if f.default is not dataclasses.MISSING:
                    kwargs[f.name] = f.default
                elif f.default_factory is not dataclasses.MISSING:
                    kwargs[f.name] = f.default_factory()
                else:
                    kwargs[f.name] = tyro.MISSING
        if validate:
            return tp(**kwargs)
        obj = object.__new__(tp)
        for key, value in kwargs.items():
            object.__setattr__(obj, key, value)
        return obj

    return make(cls, ())


def flag_defaults(cls: type) -> dict[str, Any]:
    """``{flag name: default}`` of ``cls`` (``dataclasses.MISSING`` for required fields)."""
    out: dict[str, Any] = {}
    fields = flag_fields(cls)
    for name, field in fields.items():
        owner: type = cls
        for part in field.path[:-1]:
            owner = _group_type(owner, part)
        f = next(f for f in dataclasses.fields(owner) if f.name == field.path[-1])
        out[name] = (
            f.default
            if f.default is not dataclasses.MISSING
            else f.default_factory()
            if f.default_factory is not dataclasses.MISSING
            else dataclasses.MISSING
        )
    return out


def config_flag(args: Sequence[str]) -> Path | None:
    """The value of ``--config FILE`` / ``--config=FILE`` among ``args``, or None."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config", type=Path, default=None)
    known, _ = pre.parse_known_args(list(args))
    return known.config


def parse_with_config(
    cls: type, args: Sequence[str], prog: str, legacy: Mapping[str, str] | None = None, wrap: Any = None
) -> Any:
    """Parse ``args`` for ``cls`` with ``--config FILE`` (if given) supplying the defaults (module docstring).

    ``wrap`` is the annotation tyro parses (default ``cls``; e.g. ``OmitArgPrefixes[cls]``). The instance gets the
    file in its ``config`` field when it has one.

    Raises:
        FileNotFoundError / ValueError: an unreadable file or an unknown key (before any parsing);
        SystemExit: tyro's usage errors (and --help).
    """
    import tyro

    path = config_flag(args)
    wrap = cls if wrap is None else wrap
    if path is None:
        return tyro.cli(wrap, args=list(args), prog=prog)
    values = read_config_file(path, cls, legacy)
    if "config" in flag_fields(cls):
        values["config"] = path
    return tyro.cli(wrap, args=list(args), default=build(cls, values, validate=False), prog=prog)


def field_docstrings(cls: type) -> dict[str, str]:
    """``{field: docstring}`` of a class's attribute docstrings (the string literal right after an annotated
    assignment, as tyro reads them), from its source and its bases'; whitespace collapsed to single spaces."""
    import ast
    import inspect
    import textwrap

    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, nxt in zip(body, body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                out[node.target.id] = " ".join(nxt.value.value.split())
    return out


def first_sentence(text: str) -> str:
    """The first sentence of ``text`` (up to the first ". " or the end), for one-line help text."""
    text = " ".join(str(text).split())
    cut = text.find(". ")
    return text if cut < 0 else text[: cut + 1]
