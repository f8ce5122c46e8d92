"""The data layer: annotations -> clip table -> key-frame indices -> frames -> tensors.

Never imports ``microexp.models``, the engine or the CLI.
"""
