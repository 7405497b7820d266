"""Every config reader refuses a broken YAML file with one line naming the file and where it
breaks (PyYAML's own message spans four lines and quotes the source)."""
from __future__ import annotations

import pytest

from policy_distill_ros.commands.dagger import _load_config as load_dagger_config
from policy_distill_ros.core.config_keys import read_yaml, yaml_problem
from policy_distill_ros.core.spec import SpecError, load_policy_spec
from policy_distill_ros.recording.bag_metadata import read_metadata
from policy_distill_ros.sim.config import load_sim_config
from policy_distill_ros.training.pipeline import load_run_config

BROKEN = "observation:\n  terms: [\n  - name: a\n"   # a block entry inside a flow sequence


def test_yaml_problem_is_one_line_with_line_and_column(tmp_path):
    import yaml
    with pytest.raises(yaml.YAMLError) as caught:
        yaml.safe_load(BROKEN)
    assert yaml_problem(caught.value) == "line 3, column 3: expected the node content, but " \
                                         "found '-'"


@pytest.mark.parametrize("reader", ["spec", "training", "dagger", "sim", "metadata", "read_yaml"])
def test_a_broken_config_is_one_line_naming_the_file(tmp_path, reader):
    path = tmp_path / ("metadata.yaml" if reader == "metadata" else "config.yaml")
    path.write_text(BROKEN)
    load = {"spec": load_policy_spec, "training": load_run_config, "dagger": load_dagger_config,
            "sim": load_sim_config, "metadata": lambda p: read_metadata(str(tmp_path)),
            "read_yaml": lambda p: read_yaml(p, "config")}[reader]
    with pytest.raises((ValueError, SpecError)) as caught:
        load(str(path))
    text = str(caught.value)
    assert "\n" not in text and str(path) in text, text
    assert "line 3, column 3" in text, text


def test_read_yaml_names_a_missing_or_binary_file(tmp_path):
    with pytest.raises(ValueError, match=r"config .*nope.yaml: No such file or directory$"):
        read_yaml(tmp_path / "nope.yaml", "config")
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ValueError, match=r"config .*bin.yaml: not a text file$"):
        read_yaml(tmp_path / "bin.yaml", "config")
