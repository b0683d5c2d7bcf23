#!/usr/bin/env python3
"""Fails when an engine type (tonic, hyper, h2, ...) appears in a crate's public API
outside its `interop` module.

Reads the rustdoc JSON that `scripts/public-api` makes, walks every item reachable
from the crate root (hidden ones too: generated code uses them), and reports each
public signature, field, re-export or trait impl that names an item of a forbidden
crate. Blanket and auto-trait impls are not the crate's API and are skipped.

Usage: public_api.py DOC_DIR CRATE...
"""

import json
import sys

FORBIDDEN = {"tonic", "tonic_health", "tonic_reflection", "tonic_prost", "hyper",
             "hyper_util", "h2", "axum"}
ALLOWED_MODULE = "interop"


def references(node):
    """Every item id a piece of rustdoc JSON refers to by path."""
    if isinstance(node, dict):
        if "id" in node and "path" in node and isinstance(node.get("path"), str):
            yield node["id"]
        for key, value in node.items():
            if key in ("items", "impls", "implementations", "variants", "fields", "docs",
                       "links", "span"):
                continue
            yield from references(value)
    elif isinstance(node, list):
        for value in node:
            yield from references(value)


def check(doc):
    index, paths = doc["index"], doc["paths"]
    crate = index[str(doc["root"])]["name"]

    def crate_of(item_id):
        entry = paths.get(str(item_id))
        if entry is None:
            return None, None
        return entry["path"][0], "::".join(entry["path"])

    leaks = []
    seen = set()
    stack = [(doc["root"], crate)]
    while stack:
        item_id, where = stack.pop()
        if item_id in seen or str(item_id) not in index:
            continue
        seen.add(item_id)
        item = index[str(item_id)]
        inner_kind, inner = next(iter(item["inner"].items()))
        name = item.get("name")
        here = f"{where}::{name}" if name and item_id != doc["root"] else where
        if inner_kind == "impl":
            if inner.get("is_synthetic") or inner.get("blanket_impl") is not None:
                continue
            trait = (inner.get("trait") or {}).get("path", "")
            here = f"{where} (impl {trait})" if trait else f"{where} (impl)"
        top = here.split(" ")[0].split("::")
        if len(top) > 1 and top[1] == ALLOWED_MODULE:
            continue
        if inner_kind == "use":
            target = inner.get("id")
            if target is not None and str(target) not in index:
                krate, path = crate_of(target)
                if krate in FORBIDDEN:
                    leaks.append((here, path))
                continue
            if target is not None:
                stack.append((target, where))
            continue
        for ref in references(inner):
            krate, path = crate_of(ref)
            if krate in FORBIDDEN:
                leaks.append((here, path))
        children = []
        if inner_kind == "module":
            children = inner.get("items", [])
        elif inner_kind in ("struct", "union"):
            kind = inner.get("kind", {})
            if isinstance(kind, dict):
                plain = kind.get("plain") or {}
                children += plain.get("fields", [])
                children += [f for f in (kind.get("tuple") or []) if f is not None]
            children += inner.get("impls", [])
        elif inner_kind == "enum":
            children = inner.get("variants", []) + inner.get("impls", [])
        elif inner_kind == "variant":
            kind = inner.get("kind", {})
            if isinstance(kind, dict):
                children += [f for f in (kind.get("tuple") or []) if f is not None]
                children += (kind.get("struct") or {}).get("fields", [])
        elif inner_kind == "trait":
            children = inner.get("items", [])
        elif inner_kind == "impl":
            children = inner.get("items", [])
        # Methods and fields are reported under the path of what holds them.
        stack.extend((child, here) for child in children)
    return crate, len(seen), sorted(set(leaks))


def self_test():
    """The walker finds a leak in a signature and a re-export, and none in `interop`."""
    def fn(id_, name, ret):
        return {"id": id_, "name": name, "inner": {"function": {"sig": {"output": ret}}}}
    status = {"resolved_path": {"path": "Status", "id": 90, "args": None}}
    doc = {
        "root": 1,
        "index": {
            "1": {"id": 1, "name": "demo", "inner": {"module": {"items": [2, 3, 4, 5]}}},
            "2": fn(2, "leaks", status),
            "3": {"id": 3, "name": "interop", "inner": {"module": {"items": [6]}}},
            "4": {"id": 4, "name": "Code", "inner": {"use": {"source": "tonic::Code", "id": 91}}},
            "5": fn(5, "clean", {"primitive": "u32"}),
            "6": fn(6, "to_status", status),
        },
        "paths": {"90": {"crate_id": 7, "path": ["tonic", "Status"]},
                  "91": {"crate_id": 7, "path": ["tonic", "Code"]}},
    }
    _, _, leaks = check(doc)
    expected = [("demo::Code", "tonic::Code"), ("demo::leaks", "tonic::Status")]
    if leaks != expected:
        sys.exit(f"public_api.py self-test failed: found {leaks}, expected {expected}")


def main():
    self_test()
    doc_dir, crates = sys.argv[1], sys.argv[2:]
    failed = False
    for name in crates:
        with open(f"{doc_dir}/{name}.json", encoding="utf-8") as f:
            doc = json.load(f)
        crate, walked, leaks = check(doc)
        if leaks:
            failed = True
            print(f"{crate}: engine types in the public API ({walked} items walked):")
            for where, path in leaks:
                print(f"  {where} names {path}")
        else:
            print(f"{crate}: no engine types in the public API ({walked} items walked)")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
