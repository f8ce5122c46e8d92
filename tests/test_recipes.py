"""Every shipped recipe loads, names a registered model, and its file name tells the truth about it."""

import re
from pathlib import Path

import pytest

from microexp.config import load_config
from microexp.models import get_model_spec, list_models

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))
NAME = re.compile(r"^(?P<model>[a-z0-9-]+)_(?P<input>[a-z+]+)-(?P<frames>\d+)f_(?P<dataset>[a-z0-9]+)_(?P<protocol>\d+fold|loso|split)$")


def test_the_four_families_have_cpu_and_dfme_recipes():
    families = {}
    for path in RECIPES:
        config = load_config(path)
        dataset = NAME.match(path.stem)["dataset"]
        families.setdefault(dataset, set()).add(get_model_spec(config.model.name).family)
    for dataset in ("synth", "dfme"):
        assert {"3dcnn", "two_stream", "tsm", "transformer"} <= families[dataset], dataset


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_is_valid_and_named_after_its_content(path):
    config = load_config(path)  # validates every key and value
    assert config.model.name in list_models()
    match = NAME.match(path.stem)
    assert match, f"{path.name} does not follow {{model}}_{{input}}-{{frames}}f_{{dataset}}_{{protocol}}.yaml"
    assert match["model"].replace("-", "_") == config.model.name
    assert int(match["frames"]) == config.data.num_frames
    spec = get_model_spec(config.model.name)
    assert match["input"] == spec.modality
    if match["protocol"].endswith("fold"):
        assert config.cv.protocol == "kfold" and config.cv.folds == int(match["protocol"][:-4])
    if match["dataset"] == "dfme":
        assert config.data.format == "dfme" and config.cv.folds == 10
