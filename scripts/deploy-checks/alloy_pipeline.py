#!/usr/bin/env python3
"""Runs log lines through the `loki.process` pipeline that infrastructure/loki/config.alloy
declares, as Alloy would, and prints what Loki would store for each line (one JSON object per
input line: `labels`, `structured_metadata`, `timestamp`).

The stages are read from the config, not restated here: `stage.json` (its expressions evaluated
with jmespath, the library Alloy's JSON stage follows), `stage.timestamp`, `stage.template`
(the `ToLower`/`ToUpper` templates the config may use), `stage.labels` and
`stage.structured_metadata`. A stage this script does not know fails it, so the config cannot
grow a stage the test silently ignores.

Usage: alloy_pipeline.py <config.alloy> <process block name> <log file>
"""

from __future__ import annotations

import datetime
import json
import re
import sys

import jmespath

KNOWN_STAGES = {"json", "timestamp", "template", "labels", "structured_metadata"}


def block(text: str, start: int) -> tuple[str, int]:
    """The body of the `{ ... }` block opening at or after `start`, and the index after it."""
    open_at = text.index("{", start)
    depth = 0
    in_string = False
    i = open_at
    while i < len(text):
        c = text[i]
        if in_string:
            if c == "\\":
                i += 1
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[open_at + 1 : i], i + 1
        i += 1
    raise ValueError("unbalanced braces")


def strip_comments(text: str) -> str:
    return "\n".join(
        re.sub(r'^((?:[^"/]|"(?:[^"\\]|\\.)*")*)//.*$', r"\1", line) for line in text.splitlines()
    )


def attributes(body: str) -> dict:
    """`key = "value"` and `key = { ... }` attributes of a stage body."""
    out: dict = {}
    pos = 0
    pattern = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*')
    while True:
        m = pattern.search(body, pos)
        if not m:
            return out
        key, pos = m.group(1), m.end()
        if body[pos] == "{":
            inner, pos = block(body, pos)
            out[key] = {
                k: v for k, v in re.findall(r'([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"', inner)
            }
        elif body[pos] == '"':
            s = re.match(r'"((?:[^"\\]|\\.)*)"', body[pos:])
            out[key] = s.group(1)
            pos += s.end()
        else:
            s = re.match(r"[^\s,]+", body[pos:])
            out[key] = s.group(0)
            pos += s.end()


def stages(config: str, name: str) -> list[tuple[str, dict]]:
    config = strip_comments(config)
    m = re.search(r'loki\.process\s+"' + re.escape(name) + r'"\s*\{', config)
    if not m:
        raise SystemExit(f'no loki.process "{name}" in the config')
    body, _ = block(config, m.start())
    found = []
    for sm in re.finditer(r"stage\.([a-z_]+)\s*\{", body):
        kind = sm.group(1)
        if kind not in KNOWN_STAGES:
            raise SystemExit(f"stage.{kind} is not evaluated by this script")
        inner, _ = block(body, sm.start())
        found.append((kind, attributes(inner)))
    return found


def render(template: str, value: str) -> str:
    t = template.strip()
    if t == "{{ ToLower .Value }}":
        return value.lower()
    if t == "{{ ToUpper .Value }}":
        return value.upper()
    raise SystemExit(f"template {template!r} is not evaluated by this script")


def run(pipeline: list[tuple[str, dict]], line: str) -> dict:
    extracted: dict = {}
    labels: dict = {}
    metadata: dict = {}
    timestamp = None
    parsed = None
    for kind, attrs in pipeline:
        if kind == "json":
            try:
                parsed = json.loads(line)
            except ValueError:
                parsed = None
            if not isinstance(parsed, dict):
                continue
            for key, expression in attrs.get("expressions", {}).items():
                value = jmespath.search(expression or key, parsed)
                if value is not None:
                    extracted[key] = value if isinstance(value, str) else json.dumps(value)
        elif kind == "timestamp":
            source = extracted.get(attrs["source"])
            if source is not None and attrs.get("format") == "RFC3339Nano":
                try:
                    timestamp = datetime.datetime.fromisoformat(source.replace("Z", "+00:00")).isoformat()
                except ValueError:
                    if attrs.get("action_on_failure") != "skip":
                        raise
        elif kind == "template":
            source = attrs["source"]
            if source in extracted:
                extracted[source] = render(attrs["template"], extracted[source])
        elif kind == "labels":
            for key, source in attrs.get("values", {}).items():
                if (source or key) in extracted:
                    labels[key] = extracted[source or key]
        elif kind == "structured_metadata":
            for key, source in attrs.get("values", {}).items():
                if (source or key) in extracted:
                    metadata[key] = extracted[source or key]
    return {"labels": labels, "structured_metadata": metadata, "timestamp": timestamp}


def main() -> None:
    config_path, name, log_path = sys.argv[1:4]
    with open(config_path, encoding="utf-8") as f:
        pipeline = stages(f.read(), name)
    with open(log_path, encoding="utf-8") as f:
        for line in f.read().splitlines():
            print(json.dumps(run(pipeline, line)))


if __name__ == "__main__":
    main()
