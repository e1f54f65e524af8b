"""Each TensorRT plugin's name, version and field names, as its C++ sources write them, against
model_def.ops.PLUGIN_SPECS (what the ONNX exporter writes and the parser hands the creator).

The sources are read as text (no compiler, GPU or TensorRT needed):

* ``plugins/<op>/plugin.h``: the plugin class (``class X final : public PluginBase``), its
  ``kName`` and ``kVersion``, its creator (``using XCreator = Creator<X>``);
* ``plugins/<op>/plugin.cpp``: the names in ``X::fieldNames()`` (the creator's field list),
  ``X::addFields()`` (the serialised fields), ``X::create()`` (the required list given to
  ``readFields`` and every name its visitor compares, ``name == "..."``);
* ``plugins/common/plugin_base.h``: ``kPluginNamespace``; ``plugins/common/registration.cpp``:
  the registered creators.

A mutation check feeds the parser copies of the sources with one name changed and requires the
comparison to report it.
"""
from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from model_def.ops import PLUGIN_NAMESPACE, PLUGIN_SPECS, PluginSpec

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"

_STRING = r'"((?:[^"\\\n]|\\.)*)"'


# ---- parser -------------------------------------------------------------------------------
def strip_comments(text: str) -> str:
    """The C++ text without // and /* */ comments (string and character literals kept)."""
    pattern = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'', re.S)
    return pattern.sub(lambda m: " " if m.group(0).startswith("/") else m.group(0), text)


def _matching(text: str, start: int, open_: str, close: str) -> int:
    """Index just past the `close` that matches text[start] == `open_` (literals skipped)."""
    assert text[start] == open_
    depth, i = 0, start
    while i < len(text):
        c = text[i]
        if c in "\"'":
            i = re.compile(rf"{c}(?:[^{c}\\\n]|\\.)*{c}").match(text, i).end()
            continue
        if c == open_:
            depth += 1
        elif c == close:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ValueError(f"unbalanced {open_}{close}")


def method_body(text: str, cls: str, method: str) -> str | None:
    """The body of the out-of-class definition `cls::method(...) ... { body }`, or None."""
    for m in re.finditer(rf"\b{re.escape(cls)}\s*::\s*{re.escape(method)}\s*\(", text):
        after = _matching(text, m.end() - 1, "(", ")")
        brace = re.compile(r"[^;{]*\{").match(text, after)  # qualifiers (const noexcept), then {
        if brace is not None:
            start = brace.end() - 1
            return text[start + 1:_matching(text, start, "{", "}") - 1]
    return None


def _strings(pattern: str, text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(re.findall(pattern, text))


def _constant(name: str, text: str) -> str | None:
    m = re.search(rf"\bconstexpr\s+(?:const\s+)?char\s+(?:const\s*)?\*\s*(?:const\s+)?{name}\s*=\s*{_STRING}", text)
    return None if m is None else m.group(1)


@dataclass(frozen=True)
class PluginSource:
    """What plugins/<op>/plugin.h and plugin.cpp write; None where a part was not found."""

    cls: str | None
    creator: str | None
    name: str | None
    version: str | None
    field_names: tuple[str, ...] | None  # X::fieldNames(): PluginField("name", ...)
    add_fields: tuple[str, ...] | None  # X::addFields(): fields.emplace_back("name", ...)
    create_required: tuple[str, ...] | None  # X::create(): readFields(fc, {"name", ...}, ...)
    create_compared: tuple[str, ...] | None  # X::create(): name == "name"


def parse_plugin(header: str, source: str) -> PluginSource:
    header, source = strip_comments(header), strip_comments(source)
    m = re.search(r"\bclass\s+(\w+)\s+(?:final\s+)?:\s*public\s+PluginBase\b", header)
    cls = m.group(1) if m else None
    creator = None
    if cls is not None:
        m = re.search(rf"\busing\s+(\w+)\s*=\s*Creator\s*<\s*{cls}\s*>", header)
        creator = m.group(1) if m else None
    fields_body = method_body(source, cls, "fieldNames") if cls else None
    add_body = method_body(source, cls, "addFields") if cls else None
    create_body = method_body(source, cls, "create") if cls else None
    required = None
    if create_body is not None:
        m = re.search(r"\breadFields\s*\(\s*\w+\s*,\s*\{", create_body)
        if m is not None:
            listed = create_body[m.end() - 1:_matching(create_body, m.end() - 1, "{", "}")]
            required = tuple(re.findall(_STRING, listed))
    compared = None
    if create_body is not None:
        compared = tuple(a or b for a, b in re.findall(rf"==\s*{_STRING}|{_STRING}\s*==", create_body))
    return PluginSource(
        cls=cls, creator=creator, name=_constant("kName", header), version=_constant("kVersion", header),
        field_names=_strings(rf"\bPluginField\s*\(\s*{_STRING}", fields_body),
        add_fields=_strings(rf"(?:\bemplace_back\s*\(|\bpush_back\s*\(\s*PluginField\s*\(|\bPluginField\s*\()\s*{_STRING}",
                            add_body),
        create_required=required, create_compared=compared)


def read_plugin(folder: Path) -> PluginSource:
    return parse_plugin((folder / "plugin.h").read_text(), (folder / "plugin.cpp").read_text())


def mismatches(spec: PluginSpec, src: PluginSource) -> list[str]:
    """Every disagreement between a plugin's sources and its PluginSpec, one line each."""
    op, want = spec.op, tuple(spec.fields)
    if src.cls is None:
        return [f"{op}/plugin.h: no `class ... : public PluginBase`"]
    out = []
    if src.creator is None:
        out.append(f"{op}/plugin.h: no `using ... = Creator<{src.cls}>`")
    for what, got, expected in (("kName", src.name, spec.plugin_name), ("kVersion", src.version, spec.plugin_version)):
        if got != expected:
            out.append(f"{op}/plugin.h: {src.cls}::{what} is {got!r}, PLUGIN_SPECS[{op!r}] has {expected!r}")
    for where, got in (("fieldNames()", src.field_names), ("addFields()", src.add_fields),
                       ("create()'s readFields list", src.create_required)):
        if got is None:
            out.append(f"{op}/plugin.cpp: {src.cls}::{where} not found")
        elif got != want:
            out.append(f"{op}/plugin.cpp: {src.cls}::{where} names {list(got)}, "
                       f"PLUGIN_SPECS[{op!r}].fields is {list(want)}")
    compared = set(src.create_compared or ())
    if compared - set(want):
        out.append(f"{op}/plugin.cpp: {src.cls}::create() compares field names {sorted(compared - set(want))} "
                   f"that PLUGIN_SPECS[{op!r}].fields {list(want)} lacks")
    if (compared or len(want) > 1) and set(want) - compared:
        # a visitor that ignores the name is right only for a plugin with one field
        out.append(f"{op}/plugin.cpp: {src.cls}::create() never compares {sorted(set(want) - compared)}")
    return out


# ---- the sources against PLUGIN_SPECS -----------------------------------------------------
def test_one_plugin_folder_per_spec():
    folders = {p.parent.name for p in PLUGINS.glob("*/plugin.h")}
    assert folders == set(PLUGIN_SPECS), "plugins/<op>/plugin.h folders and PLUGIN_SPECS differ"
    for op in PLUGIN_SPECS:
        assert (PLUGINS / op / "plugin.cpp").is_file(), f"plugins/{op}/plugin.cpp is missing"


@pytest.mark.parametrize("op", sorted(PLUGIN_SPECS))
def test_plugin_source_matches_spec(op: str):
    spec = PLUGIN_SPECS[op]
    src = read_plugin(PLUGINS / op)
    assert mismatches(spec, src) == []
    # the parse really found every part (an empty list would compare equal to nothing)
    assert src.field_names == src.add_fields == src.create_required == tuple(spec.fields)


def test_plugin_namespace_matches():
    assert _constant("kPluginNamespace", strip_comments((PLUGINS / "common" / "plugin_base.h").read_text())) \
        == PLUGIN_NAMESPACE


def test_every_plugin_is_registered():
    text = strip_comments((PLUGINS / "common" / "registration.cpp").read_text())
    # registered at load under the creators' namespace (not REGISTER_TENSORRT_PLUGIN's "": see there)
    registered = re.findall(r"\bNamespacedRegistrar\s*<\s*(\w+)\s*>\s+\w+\s*;", text)
    assert "REGISTER_TENSORRT_PLUGIN" not in text
    m = re.search(r"\bgetCreators\s*\(", text)
    assert m is not None, "registration.cpp defines no getCreators"
    body = text[m.end():]
    body = body[:_matching(body, body.index("{"), "{", "}")]
    statics = dict((var, cls) for cls, var in re.findall(r"\bstatic\s+(\w+)\s+(\w+)\s*;", body))
    listed = re.search(r"kCreators\[\]\s*=\s*\{([^}]*)\}", body)
    assert listed is not None, "getCreators has no kCreators[] list"
    in_list = [statics.get(v) for v in re.findall(r"&\s*(\w+)", listed.group(1))]
    count = re.search(r"\bnbCreators\s*=\s*(\d+)\s*;", body)
    creators = sorted(read_plugin(PLUGINS / op).creator for op in PLUGIN_SPECS)
    assert sorted(registered) == creators
    assert sorted(in_list) == creators
    assert count is not None and int(count.group(1)) == len(creators)


# ---- mutation check: the comparison does fail -------------------------------------------
def _mutate(text: str, cls: str | None, method: str | None, old: str, new: str) -> str:
    """`text` with `old` replaced by `new` once, inside `cls::method`'s body when method is given."""
    if method is None:
        assert text.count(old) == 1, f"{old!r} is not unique"
        return text.replace(old, new)
    m = re.search(rf"\b{cls}::{method}\s*\(", text)
    assert m is not None, f"no {cls}::{method} in the source"
    head, tail = text[:m.start()], text[m.start():]
    assert old in tail[:tail.index("\n}\n") + 3], f"{old!r} not in {cls}::{method}"
    return head + tail.replace(old, new, 1)


MUTATIONS = [
    # (op, file, method, old, new, expected part of the report)
    ("topr_route", "plugin.cpp", "addFields", '"grid_h"', '"grid_hh"', "addFields() names"),
    ("topr_route", "plugin.cpp", "fieldNames", '"stride"', '"strides"', "fieldNames() names"),
    ("event_splat", "plugin.cpp", "create", '"time_scale"}', '"timescale"}', "readFields list names"),
    ("event_splat", "plugin.cpp", "create", 'name == "height"', 'name == "heigth"', "compares field names"),
    ("deform_read", "plugin.cpp", "create", '{"strides"}', '{"stride"}', "readFields list names"),
    ("deform_read", "plugin.h", None, 'kVersion = "1"', 'kVersion = "2"', "kVersion is '2'"),
    ("topr_route", "plugin.h", None, '"EventSPDTopRRoute"', '"EventSPDTopRoute"', "kName is 'EventSPDTopRoute'"),
]


@pytest.mark.parametrize("op, file, method, old, new, report", MUTATIONS,
                         ids=[f"{m[0]}-{m[2] or m[1]}-{m[4]}" for m in MUTATIONS])
def test_changed_name_is_reported(op, file, method, old, new, report, tmp_path: Path):
    copy = tmp_path / op
    shutil.copytree(PLUGINS / op, copy)
    original = (copy / file).read_text()
    cls = read_plugin(copy).cls
    (copy / file).write_text(_mutate(original, cls, method, old, new))
    found = mismatches(PLUGIN_SPECS[op], read_plugin(copy))
    assert found, f"changing {old} to {new} in {op}/{file} went unnoticed"
    assert any(report in line for line in found), found
    assert any(new.split('"')[1] in line for line in found), found


def test_parser_ignores_comments():
    header = 'class P final : public PluginBase {\n  // kName = "Wrong"\n  static constexpr char const* kName = "N";\n' \
             '  static constexpr char const* kVersion = "3"; };\nusing PC = Creator<P>;\n'
    source = ('std::vector<PluginField> P::fieldNames() {\n  // PluginField("commented", ...)\n'
              '  return {PluginField("a", nullptr, PluginFieldType::kINT32, 1)};\n}\n'
              'void P::addFields(std::vector<PluginField>& fields) {\n  fields.emplace_back("a", &mA, t, 1);\n}\n'
              'IPluginV3* P::create(PluginFieldCollection const* fc) {\n'
              '  readFields(fc, {"a"}, [&](std::string const& name, PluginField const& f) {\n'
              '    if (name == "a") a = fieldInt(f); /* name == "b" */\n  });\n  return new P(a);\n}\n')
    src = parse_plugin(header, source)
    assert (src.cls, src.creator, src.name, src.version) == ("P", "PC", "N", "3")
    assert src.field_names == src.add_fields == src.create_required == src.create_compared == ("a",)
    assert mismatches(PluginSpec("x", "N", "3", ("a",)), src) == []
    assert mismatches(PluginSpec("x", "N", "3", ("a", "b")), src) != []
