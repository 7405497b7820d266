"""ROS params files read outside a node (the CLI, the simulator config), matched the way rcl does.

A params file maps node-name patterns to `ros__parameters` blocks. rcl reads a key as a fully
qualified node name (a key without a leading `/` is taken from the root namespace, so a bare
`student_node:` matches only `/student_node`), where a token `*` stands for one name token and
`**` for any number of them. The shipped files key their blocks `/**/node_name:`, so they apply
under any namespace a launch file or `__ns:=` gives. Every matching block applies, in file
order, a later value winning, as for the node itself (test/test_params_file.py checks this
against rclpy).
"""
from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

PARAMS_KEY = "ros__parameters"


def pattern_matches(pattern: str, node_name: str, namespace: str = "/") -> bool:
    """True when the params-file key `pattern` applies to the node `namespace/node_name`."""
    target = "/".join(filter(None, namespace.split("/") + [node_name]))
    parts = []
    for token in pattern.strip("/").split("/"):
        if token == "**":
            parts.append(r"(?:/[^/]+)*")
        elif token == "*":
            parts.append(r"/[^/]+")
        else:   # rcl refuses a file with any other use of `*`
            parts.append("/" + re.escape(token))
    return re.fullmatch("".join(parts), "/" + target) is not None


def node_blocks(data: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(key, ros__parameters) of every node block of a parsed params file, in file order."""
    for key, block in (data or {}).items():
        if isinstance(block, Mapping) and isinstance(block.get(PARAMS_KEY), Mapping):
            yield str(key), dict(block[PARAMS_KEY])


def node_params(source: str | Path | Mapping[str, Any], node_name: str,
                namespace: str = "/") -> dict[str, Any]:
    """The parameters a node `namespace/node_name` gets from a params file ({} when none apply).

    `source`: a file path or its parsed content. Nested mappings (dotted parameter names) merge.
    """
    if isinstance(source, Mapping):
        data = source
    else:
        with open(source) as f:
            data = yaml.safe_load(f) or {}
    merged: dict[str, Any] = {}
    if isinstance(data, Mapping):
        for key, params in node_blocks(data):
            if pattern_matches(key, node_name, namespace):
                _merge(merged, params)
    return merged


def _merge(into: dict[str, Any], params: Mapping[str, Any]) -> None:
    for key, value in params.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = dict(value) if isinstance(value, Mapping) else value


def flat_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as the dotted parameter names a node declares (`sensor_noise.imu_std`)."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, Mapping):
            flat.update(flat_params(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
