"""Labelled synthetic live streams: scenario format, renderer, encoder, random generator."""

from streaming.synth.encode import encode_segments, encode_stream
from streaming.synth.generate import random_scenario
from streaming.synth.render import Renderer
from streaming.synth.scenario import Encoding, Scenario, load_scenario

__all__ = [
    "Encoding",
    "Renderer",
    "Scenario",
    "encode_segments",
    "encode_stream",
    "load_scenario",
    "random_scenario",
]
