"""Every spec field with its type, default and help: `raysweep check SPEC --explain`
and the spec reference (docs/spec-reference.md).

The help is each field's attribute docstring in `spec.py` (pydantic's
`use_attribute_docstrings`), so the code, `--explain` and docs/spec-reference.md say the same.
Imports only pydantic and the config models (no Ray, MLflow or torch).
"""

from __future__ import annotations

import json
import textwrap
import types
from typing import Annotated, Any, Literal, NamedTuple, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from raysweep.config.spec import Spec

KEY = "<name>"
"""Stands for a key the user picks (a searched param's name) in a dotted path."""
REQUIRED = "required"
SECTION_DEFAULTS = "defaults below"
TEXT_WIDTH = 100


class Row(NamedTuple):
    path: str
    """Dotted path in the YAML, e.g. `scheduler.max_epochs`."""
    type: str
    """The type with its constraints, e.g. `int >= 1`."""
    default: str
    """The default as YAML (`"tpe"`, `null`, `[]`), or `required`; empty for a
    search-param kind's heading row."""
    description: str


def rows(model: type[BaseModel] = Spec, prefix: str = "") -> list[Row]:
    """One row per field of `model`, depth first; a nested section's fields follow
    its own row. A dict of search params gets one block per param kind."""
    out: list[Row] = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        out.append(Row(path, _type_text(field.annotation, field.metadata), _default_text(field),
                       _one_line(field.description)))
        out.extend(_nested_rows(field.annotation, path))
    return out


def explain(model: type[BaseModel] = Spec) -> str:
    """Plain text: `path  type, default  description`, wrapped to TEXT_WIDTH
    columns, a blank line between top-level groups."""
    table = rows(model)
    width = max(len(r.path) for r in table)
    lines = [f"Every {model.__name__} field: dotted path, type, default (or required), help."]
    group = None
    for row in table:
        top = row.path.split(".")[0].split("[")[0]
        this_group = top if any(r.path.startswith((top + ".", top + "[")) for r in table) else ""
        if this_group != group:
            lines.append("")
            group = this_group
        kind = row.type
        if row.default:
            kind += f", {row.default}" if row.default in (REQUIRED, SECTION_DEFAULTS) else f", default {row.default}"
        lines.append(textwrap.fill(f"{row.path:<{width}}  {kind}  {row.description}", width=TEXT_WIDTH,
                                   subsequent_indent=" " * (width + 2), break_on_hyphens=False))
    return "\n".join(lines)


def explain_markdown(model: type[BaseModel] = Spec) -> str:
    """The same rows as a Markdown table (docs/spec-reference.md)."""
    lines = [
        "Every field of an experiment spec, generated from the field docstrings in "
        "`raysweep/config/spec.py` by `raysweep.config.explain.explain_markdown()`; "
        "`raysweep check SPEC --explain` prints the same as text. "
        f"`{KEY}` stands for a searched param's name.",
        "",
        "| field | type | default | description |",
        "|---|---|---|---|",
    ]
    for row in rows(model):
        default = row.default if row.default in ("", REQUIRED, SECTION_DEFAULTS) else _code(row.default)
        cells = [_code(row.path), _code(row.type), default, row.description]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def _nested_rows(annotation: Any, path: str) -> list[Row]:
    base, _ = _unwrap(annotation)
    if _is_model(base):
        return rows(base, f"{path}.")
    origin, args = get_origin(base), get_args(base)
    if origin is list and _is_model(_unwrap(args[0])[0]):
        return rows(_unwrap(args[0])[0], f"{path}[].")
    if origin is dict:
        variants = _models_in(args[1])
        if len(variants) == 1:
            return rows(variants[0], f"{path}.{KEY}.")
        out: list[Row] = []
        for variant in variants:  # one block per search-param kind
            out.append(Row(f"{path}.{KEY}", _model_label(variant), "", _one_line(variant.__doc__)))
            out.extend(rows(variant, f"{path}.{KEY}."))
        return out
    return []


def _unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    """(the type without Annotated, the metadata Annotated carried)."""
    metadata: list[Any] = []
    while get_origin(annotation) is Annotated:
        annotation, *extra = get_args(annotation)
        metadata.extend(extra)
    return annotation, metadata


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    base, _ = _unwrap(annotation)
    if _is_model(base):
        return [base]
    if _is_union(base):
        return [arg for arg in (_unwrap(a)[0] for a in get_args(base)) if _is_model(arg)]
    return []


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType)


def _type_text(annotation: Any, metadata: list[Any] | tuple[Any, ...] = ()) -> str:
    base, extra = _unwrap(annotation)
    metadata = [*metadata, *extra]
    if _is_union(base):
        members = [a for a in get_args(base) if a is not type(None)]
        optional = len(members) < len(get_args(base))
        if len(members) == 1:
            text = _type_text(members[0], metadata)
        else:
            text = " | ".join(_type_text(m) for m in members)
        return f"{text} or null" if optional else text
    origin, args = get_origin(base), get_args(base)
    if origin is Literal:
        return " | ".join(json.dumps(v) for v in args)
    if origin is list:
        name = f"list[{_type_text(args[0])}]"
    elif origin is dict:
        name = f"dict[{_type_text(args[0])}, {_type_text(args[1])}]"
    elif base is Any:
        name = "any"
    elif _is_model(base):
        name = _model_label(base)
    else:
        name = getattr(base, "__name__", str(base))
    return name + _constraints(base, metadata)


def _constraints(base: Any, metadata: list[Any]) -> str:
    """` >= 1`, ` (non-empty)`, ...: the rules pydantic checks, read from the field's
    metadata by attribute (annotated_types.Gt has `gt`, ...)."""
    is_int = base is int
    bounds, rules = [], []
    for item in metadata:
        if isinstance(item, FieldInfo):  # e.g. the discriminator of a union
            continue
        if (gt := getattr(item, "gt", None)) is not None:
            bounds.append(f">= {gt + 1}" if is_int else f"> {gt}")
        if (ge := getattr(item, "ge", None)) is not None:
            bounds.append(f">= {ge}")
        if (lt := getattr(item, "lt", None)) is not None:
            bounds.append(f"<= {lt - 1}" if is_int else f"< {lt}")
        if (le := getattr(item, "le", None)) is not None:
            bounds.append(f"<= {le}")
        if (pattern := getattr(item, "pattern", None)) is not None:
            rules.append(f"matching {pattern}")
        if (min_length := getattr(item, "min_length", None)) is not None:
            rules.append("non-empty" if min_length == 1 else f"at least {min_length} items")
        if (max_length := getattr(item, "max_length", None)) is not None:
            rules.append(f"at most {max_length} {'chars' if base is str else 'items'}")
    text = (" " + " and ".join(bounds)) if bounds else ""
    return text + (f" ({'; '.join(rules)})" if rules else "")


def _default_text(field: FieldInfo) -> str:
    if field.is_required():
        return REQUIRED
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        dumped = value.model_dump(mode="json")
        all_defaults = all(not f.is_required() and dumped[n] == _jsonable(f.get_default(call_default_factory=True))
                           for n, f in type(value).model_fields.items())
        return SECTION_DEFAULTS if all_defaults else json.dumps(dumped)
    return json.dumps(value)


def _model_label(model: type[BaseModel]) -> str:
    """`float param` for a search-param kind (a model with a one-value `type`
    Literal), else `section`."""
    field = model.model_fields.get("type")
    if field is not None and get_origin(field.annotation) is Literal and len(get_args(field.annotation)) == 1:
        return f"{get_args(field.annotation)[0]} param"
    return "section"


def _code(text: str) -> str:
    return f"`{text}`"


def _jsonable(value: Any) -> Any:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())
