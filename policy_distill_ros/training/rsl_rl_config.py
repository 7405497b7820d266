"""The agent config a run saved beside its rsl_rl / Isaac Lab checkpoints: what the weights do not
say.

rsl_rl checkpoints hold tensors only; the actor's activation is not among them. Isaac Lab's
training script writes the run's agent config next to the checkpoints: ``<run>/params/agent.yaml``
beside ``<run>/model_<iteration>.pt``. Two layouts exist: configs for rsl-rl-lib >= 4 have an
``actor`` section (``class_name``, ``hidden_dims``, ``activation``, ``rnn_type``...), older ones a
``policy`` section (``class_name: ActorCritic | ActorCriticRecurrent``, ``actor_hidden_dims``,
``activation``). The YAML is read with a safe loader: the Python tags Isaac Lab's dumper writes
(``!!python/tuple`` ...) become plain lists, mappings or strings; nothing is constructed or run.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from policy_distill_ros.core.config_keys import yaml_problem

AGENT_CONFIG_RELPATH = Path("params") / "agent.yaml"


@dataclass(frozen=True)
class ActorConfig:
    """The actor part of a saved agent config (None where the config does not say)."""

    path: Path
    class_name: str | None
    activation: str | None
    hidden_dims: tuple[int, ...] | None
    recurrent: str | None   # rnn_type (or "recurrent") when the config describes a recurrent actor


class _PlainLoader(yaml.SafeLoader):
    """SafeLoader that reads ``!!python/...`` tags as the plain data under them."""


def _plain_python_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node):
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    return loader.construct_scalar(node)


_PlainLoader.add_multi_constructor("tag:yaml.org,2002:python/", _plain_python_tag)


def find_agent_config(checkpoint: str | os.PathLike) -> Path | None:
    """``params/agent.yaml`` in the checkpoint's directory, if there is one."""
    candidate = Path(checkpoint).parent / AGENT_CONFIG_RELPATH
    return candidate if candidate.is_file() else None


def read_actor_config(path: str | os.PathLike) -> ActorConfig:
    """The actor description of an agent config; ValueError naming the file when unreadable."""
    path = Path(path)
    try:
        data = yaml.load(path.read_text(), Loader=_PlainLoader)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the agent config ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ValueError(
            f"{path}: not a text file (expected the run's agent config YAML)"
        ) from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: invalid YAML ({yaml_problem(exc)})") from None
    if not isinstance(data, dict):
        raise ValueError(
            f"{path}: expected a mapping (the run's agent config), got {type(data).__name__}"
        )
    if isinstance(data.get("actor"), dict):
        section, hidden_key, name = data["actor"], "hidden_dims", "actor"
    elif isinstance(data.get("policy"), dict):
        section, hidden_key, name = data["policy"], "actor_hidden_dims", "policy"
    else:
        raise ValueError(f"{path}: no 'actor' (rsl-rl-lib >= 4) or 'policy' (ActorCritic) section")
    hidden = section.get(hidden_key)
    if hidden is not None:
        if not isinstance(hidden, list) or not all(
            isinstance(h, int) and not isinstance(h, bool) for h in hidden
        ):
            raise ValueError(f"{path}: {name}.{hidden_key} is not a list of ints ({hidden!r})")
        hidden = tuple(hidden)
    class_name = section.get("class_name")
    class_name = str(class_name) if class_name is not None else None
    recurrent = section.get("rnn_type")
    if recurrent is None and class_name and ("Recurrent" in class_name or "RNN" in class_name):
        recurrent = "recurrent"
    activation = section.get("activation")
    return ActorConfig(
        path=path,
        class_name=class_name,
        activation=str(activation) if activation else None,
        hidden_dims=hidden,
        recurrent=str(recurrent) if recurrent else None,
    )
