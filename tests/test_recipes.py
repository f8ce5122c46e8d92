"""Every shipped recipe loads, names a registered model, and its file name tells the truth about it."""

import re
from pathlib import Path

import pytest

from microexp.config import load_config
from microexp.models import get_model_spec, list_models

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))
# {model}_{input}-{frames}f_{dataset}_{protocol}; one-flow inputs (apex-flow) have no frame count
NAME = re.compile(r"^(?P<model>[a-z0-9-]+)_(?:(?P<input>[a-z+]+)-(?P<frames>\d+)f|(?P<flow>apex-flow))"
                  r"_(?P<dataset>[a-z0-9-]+)_(?P<protocol>\d+fold|loso|lodo|split|cross)$")


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
    spec = get_model_spec(config.model.name, num_frames=config.data.num_frames, input_size=config.data.size)
    modality = config.data.modality or spec.modality  # data.modality feeds a model another family's input
    if match["flow"]:
        assert modality == "apex_flow" and config.data.num_frames == 1
    else:
        assert int(match["frames"]) == config.data.num_frames
        assert match["input"] == modality
    if match["protocol"].endswith("fold"):
        assert config.cv.protocol == "kfold" and config.cv.folds == int(match["protocol"][:-4])
    else:
        assert config.cv.protocol == match["protocol"]  # loso, lodo (leave one dataset out), split or cross
    if match["dataset"] == "dfme":
        assert config.data.format == "dfme" and config.cv.folds == 10


# ---------------------------------------------------------------------------------------- real-dataset recipes
# The walkthroughs (docs/walkthroughs.md) train one recipe per real dataset; the dataset part of the name says
# which source datasets its clip table holds (the `dataset` column the class map is looked up with).
SOURCES = {"dfme": ("dfme",), "casme2": ("casme2",), "samm": ("samm",), "smic": ("smic",), "casme3": ("casme3",),
           "mmew": ("mmew",), "megc": ("casme2", "samm", "smic"), "megc-composite": ("casme2", "samm", "smic")}
REAL = [p for p in RECIPES if NAME.match(p.stem) and NAME.match(p.stem)["dataset"] in SOURCES]
# strategies that place frames by the annotated apex (SMIC has none: its apex is the clip's middle, estimated)
APEX_STRATEGIES = {"onset_apex", "apex_centered", "onset_apex_offset"}


def test_every_dataset_microexp_reads_has_a_walkthrough_recipe():
    datasets = {NAME.match(p.stem)["dataset"] for p in REAL}
    assert {"dfme", "casme2", "samm", "smic", "megc"} <= datasets, datasets


@pytest.mark.parametrize("path", REAL, ids=[p.stem for p in REAL])
def test_real_recipe_class_map_knows_every_emotion_of_its_datasets(path):
    from microexp.data.annotations import KNOWN_EMOTIONS
    from microexp.data.class_maps import get_class_map

    config = load_config(path)
    class_map = get_class_map(config.data.class_map)
    for dataset in SOURCES[NAME.match(path.stem)["dataset"]]:
        for emotion in sorted(KNOWN_EMOTIONS[dataset]):
            # KeyError = the clip would be an "unknown emotion" error and dropped; None = dropped by protocol
            target = class_map.lookup(dataset, emotion)
            assert target is None or target in class_map.classes


@pytest.mark.parametrize("path", REAL, ids=[p.stem for p in REAL])
def test_real_recipe_protocol_matches_its_name_and_never_selects_on_test_subjects(path):
    config = load_config(path)
    match = NAME.match(path.stem)
    if match["protocol"] == "loso":
        assert config.cv.protocol == "loso"
    if config.train.model_selection == "val":
        assert config.cv.val_fraction > 0  # an inner split of the training subjects, never the test subject
    if "smic" in SOURCES[match["dataset"]] and not match["flow"]:
        # an apex flow is onset->apex by definition: for SMIC the field takes the clip's middle as its apex
        assert config.data.sampling not in APEX_STRATEGIES, "SMIC has no apex labels"
