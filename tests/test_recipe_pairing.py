"""The frame family reads one frame: it must be the apex of the frames its sampling strategy returns.

The DFME frame baseline sampled ``onset_apex`` (apex LAST) while the model read ``T // 2`` (about 57 % up
the rise). These tests check the pairing with the real sampler, for every shipped frame recipe and for
the strategy/index combinations validation accepts.
"""

from pathlib import Path

import pytest

from microexp.config import apex_position, load_config
from microexp.data.sampling import STRATEGIES, sample_indices
from microexp.errors import ConfigError
from microexp.models import get_model_spec, model_info
from microexp.models.frame import resolve_apex_index

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))
# frame models given the onset->apex flow (data.modality: apex_flow) read no frame of the clip: not paired
FRAME_RECIPES = [p for p in RECIPES if model_info(load_config(p).model.name).family == "frame"
                 and load_config(p).data.modality is None]

# (onset, apex, offset): apex early, central, late; long and short rises (every clip >= 16 frames)
CLIPS = [(0, 30, 40), (10, 25, 40), (100, 140, 300), (1, 40, 60)]


def _read_frame(config, clip):
    """The frame number the recipe's model sees for ``clip``: the real sampler, then the model's index."""
    spec = get_model_spec(config.model.name, num_frames=config.data.num_frames, input_size=config.data.size,
                          **config.model.kwargs)
    frames = sample_indices(config.data.sampling, *clip, config.data.num_frames, stride=config.data.stride)
    return frames[spec.apex_index]


def test_there_are_frame_recipes():
    assert {p.name for p in FRAME_RECIPES} >= {"frame-r18_rgb-8f_dfme_10fold.yaml", "frame-tiny_rgb-8f_synth_5fold.yaml"}


@pytest.mark.parametrize("path", FRAME_RECIPES, ids=[p.stem for p in FRAME_RECIPES])
@pytest.mark.parametrize("clip", CLIPS)
def test_every_frame_recipe_reads_the_apex(path, clip):
    assert _read_frame(load_config(path), clip) == clip[1]


@pytest.mark.parametrize("frames", [1, 4, 8, 16])
@pytest.mark.parametrize("clip", CLIPS)
def test_accepted_pairings_read_the_apex_at_any_frame_count(frames, clip):
    for strategy, kwargs in (("onset_apex", "model.kwargs.apex_index=-1"), ("apex_centered", "model.kwargs={}")):
        config = load_config(None, ["model.name=frame_tiny", f"data.sampling={strategy}", f"data.num_frames={frames}",
                                    kwargs])
        assert _read_frame(config, clip) == clip[1], (strategy, frames)


@pytest.mark.parametrize("frames", [1, 2, 7, 8])
def test_apex_position_is_where_the_sampler_puts_the_apex(frames):
    onset, apex, offset = 0, 50, 100  # room for a centred window at every stride tried
    for strategy in STRATEGIES:
        position = apex_position(strategy, frames)
        if position is not None:
            for stride in (1, 3):
                assert sample_indices(strategy, onset, apex, offset, frames, stride=stride)[position] == apex


def test_onset_apex_with_the_middle_index_is_refused():
    with pytest.raises(ConfigError, match=r"data.sampling='onset_apex': model frame_tiny reads frame 4 of 8 .*puts the "
                                          r"apex at frame 7; set model.kwargs.apex_index=-1"):
        load_config(None, ["model.name=frame_tiny", "data.sampling=onset_apex"])
    with pytest.raises(ConfigError, match=r"puts the apex at frame 4; set model.kwargs.apex_index=null"):
        load_config(None, ["model.name=frame_tiny", "data.sampling=apex_centered", "model.kwargs.apex_index=-1"])


@pytest.mark.parametrize("strategy", [s for s in STRATEGIES if s not in ("onset_apex", "apex_centered")])
def test_strategies_without_a_fixed_apex_are_refused_for_the_frame_family(strategy):
    with pytest.raises(ConfigError, match=rf"data.sampling='{strategy}'.*puts the apex at no fixed frame"):
        load_config(None, ["model.name=frame_tiny", f"data.sampling={strategy}"])
    load_config(None, ["model.name=tsm_tiny", f"data.sampling={strategy}"])  # other families see every frame


def test_negative_apex_index_counts_from_the_end():
    assert [resolve_apex_index(i, 8) for i in (None, 0, 7, -1, -8)] == [4, 0, 7, 7, 0]
    for bad in (8, -9, 1.5, True):
        with pytest.raises(ValueError, match="apex_index"):
            resolve_apex_index(bad, 8)
