"""run_config.read_config: the one reader of a run folder's config.yaml."""
import pytest

from mobilemed import run_files
from mobilemed.run_config import read_config
from mobilemed.errors import MobilemedError
from mobilemed.export.run_summary import run_summary


def test_config_section_is_read_and_absent_file_is_none(tmp_path):
    assert read_config(tmp_path) is None
    (tmp_path / run_files.CONFIG).write_text("config:\n  version: 2\n  data: pneumoniamnist\n  model:\n"
                                             "    mode: finetune\nspec:\n  arch: mobilenet_v2\n")
    config = read_config(tmp_path)
    assert config["data"] == "pneumoniamnist" and run_files.config_value(config, "model", "mode") == "finetune"
    assert run_summary(tmp_path) == {"data": "pneumoniamnist", "mode": "finetune"}


@pytest.mark.parametrize("text", ["config: [unclosed", "spec: {}\n", "- a list\n", "config: 3\n"])
def test_a_broken_config_is_refused_naming_the_file(tmp_path, text):
    (tmp_path / run_files.CONFIG).write_text(text)
    with pytest.raises(MobilemedError, match="config.yaml") as err:
        read_config(tmp_path)
    assert str(tmp_path) in str(err.value) and "--overwrite" in str(err.value)
