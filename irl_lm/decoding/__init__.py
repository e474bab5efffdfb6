"""Decoding over a model's KV cache: sampling, beam search, their settings, calculator decoding.

* :mod:`irl_lm.decoding.search` - ``temperature_sample`` and ``beam_search`` (one jitted
  ``lax.while_loop`` each over ``model.init_decode_state`` / ``model.decode_step``).
* :mod:`irl_lm.decoding.config` - ``DecodingConfig`` and jitted decode functions.
* :mod:`irl_lm.decoding.calculator` - GSM8k calculator decoding (forces ``<<expr=result>>``).
"""
from irl_lm.decoding.search import (BeamOutput, DecodableModel, SampleOutput, beam_search,
                                    length_penalty, nucleus_threshold, temperature_sample)

__all__ = ["BeamOutput", "DecodableModel", "SampleOutput", "beam_search", "length_penalty",
           "nucleus_threshold", "temperature_sample"]
