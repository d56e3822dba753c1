#!/usr/bin/env python3
"""Lists a crate's public API from rustdoc's JSON output, one item per line, sorted.

Usage: public-api.py CRATE.json [--count]

Walks what the crate root makes reachable: modules, re-exports (followed), structs with their
public fields, enums with their variants, traits with their items, functions, inherent methods,
constants, statics, type aliases, macros, and the trait implementations written for the
crate's own types (not the compiler's automatic or blanket ones). A line names the item's kind
and path; a function's line carries its parameter names and whether it returns something, so
that removing or reordering parameters shows.
"""

import json
import sys


def kind_of(item):
    inner = item.get("inner")
    if isinstance(inner, dict) and inner:
        return next(iter(inner))
    return str(inner)


def type_name(ty):
    """A short rendering of a rustdoc JSON type, enough to tell `for` types apart."""
    if not isinstance(ty, dict):
        return str(ty)
    if "resolved_path" in ty:
        return ty["resolved_path"].get("path") or ty["resolved_path"].get("name", "?")
    if "primitive" in ty:
        return ty["primitive"]
    if "borrowed_ref" in ty:
        return "&" + type_name(ty["borrowed_ref"]["type"])
    if "generic" in ty:
        return ty["generic"]
    if "slice" in ty:
        return "[" + type_name(ty["slice"]) + "]"
    return next(iter(ty))


class Lister:
    def __init__(self, doc):
        self.index = doc["index"]
        self.paths = doc.get("paths", {})
        self.lines = set()
        self.seen = set()

    def item(self, item_id):
        return self.index.get(str(item_id))

    def fn_line(self, prefix, path, item):
        f = item["inner"]["function"]
        sig = f.get("sig") or f.get("decl") or {}
        params = [p[0] for p in sig.get("inputs", [])]
        ret = " -> _" if sig.get("output") is not None else ""
        self.lines.add(f"{prefix} {path}({', '.join(params)}){ret}")

    def impls(self, owner_path, impl_ids):
        for impl_id in impl_ids:
            imp = self.item(impl_id)
            if imp is None:
                continue
            inner = imp["inner"]["impl"]
            if inner.get("is_synthetic") or inner.get("blanket_impl") is not None:
                continue
            trait = inner.get("trait")
            if trait is not None:
                name = trait.get("path") or trait.get("name", "?")
                self.lines.add(f"impl {name} for {owner_path}")
                continue
            for member_id in inner.get("items", []):
                member = self.item(member_id)
                if member is None or member.get("visibility") != "public":
                    continue
                path = f"{owner_path}::{member['name']}"
                kind = kind_of(member)
                if kind == "function":
                    self.fn_line("fn", path, member)
                else:
                    self.lines.add(f"{kind} {path}")

    def walk(self, item_id, path):
        item = self.item(item_id)
        if item is None:
            # Another crate's item, not inlined: name where it comes from.
            source = self.paths.get(str(item_id), {})
            self.lines.add(f"use {path} = {'::'.join(source.get('path', ['?']))}")
            return
        key = (str(item_id), path)
        if key in self.seen:
            return
        self.seen.add(key)
        kind = kind_of(item)
        inner = item["inner"][kind] if isinstance(item["inner"], dict) else None
        if kind == "module":
            self.lines.add(f"mod {path}")
            for child_id in inner["items"]:
                child = self.item(child_id)
                if child is None or child.get("visibility") != "public":
                    continue
                child_kind = kind_of(child)
                if child_kind in ("use", "import"):
                    use = child["inner"][child_kind]
                    if use.get("is_glob"):
                        target = self.item(use.get("id"))
                        if target is not None and kind_of(target) == "module":
                            for grand_id in target["inner"]["module"]["items"]:
                                grand = self.item(grand_id)
                                if grand is not None and grand.get("visibility") == "public":
                                    self.walk(grand_id, f"{path}::{grand['name']}")
                        continue
                    if use.get("id") is None:
                        self.lines.add(f"use {path}::{use['name']} = {use['source']}")
                        continue
                    self.walk(use["id"], f"{path}::{use['name']}")
                else:
                    self.walk(child_id, f"{path}::{child['name']}")
        elif kind == "struct":
            self.lines.add(f"struct {path}")
            struct_kind = inner.get("kind", {})
            fields = []
            if isinstance(struct_kind, dict):
                if "plain" in struct_kind:
                    fields = struct_kind["plain"].get("fields", [])
                elif "tuple" in struct_kind:
                    fields = [f for f in struct_kind["tuple"] if f is not None]
            for field_id in fields:
                field = self.item(field_id)
                if field is not None and field.get("visibility") == "public":
                    self.lines.add(f"field {path}::{field['name']}")
            self.impls(path, inner.get("impls", []))
        elif kind == "enum":
            self.lines.add(f"enum {path}")
            for variant_id in inner.get("variants", []):
                variant = self.item(variant_id)
                if variant is not None:
                    self.lines.add(f"variant {path}::{variant['name']}")
            self.impls(path, inner.get("impls", []))
        elif kind == "union":
            self.lines.add(f"union {path}")
            self.impls(path, inner.get("impls", []))
        elif kind == "trait":
            self.lines.add(f"trait {path}")
            for member_id in inner.get("items", []):
                member = self.item(member_id)
                if member is None:
                    continue
                member_path = f"{path}::{member['name']}"
                if kind_of(member) == "function":
                    self.fn_line("fn", member_path, member)
                else:
                    self.lines.add(f"{kind_of(member)} {member_path}")
        elif kind == "function":
            self.fn_line("fn", path, item)
        else:
            self.lines.add(f"{kind} {path}")


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: public-api.py CRATE.json [--count]")
    with open(sys.argv[1]) as f:
        doc = json.load(f)
    lister = Lister(doc)
    root = lister.item(doc["root"])
    lister.walk(doc["root"], root["name"])
    lines = sorted(lister.lines)
    if "--count" in sys.argv[2:]:
        print(len(lines))
    else:
        print("\n".join(lines))


if __name__ == "__main__":
    main()
