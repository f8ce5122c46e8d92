"""Every config key validated in one place, before anything is written: one-line ConfigError naming the key,
the value and what was expected."""

import pytest

from microexp.config import PROTOCOLS, load_config
from microexp.errors import ConfigError


def one_line_error(overrides, match, path=None):
    with pytest.raises(ConfigError, match=match) as info:
        load_config(path, overrides)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_lodo_protocol_is_accepted():
    # the leave-one-dataset-out split exists in microexp.splits; cv.protocol must be able to name it
    assert "lodo" in PROTOCOLS
    assert load_config(None, ["cv.protocol=lodo"]).cv.protocol == "lodo"
