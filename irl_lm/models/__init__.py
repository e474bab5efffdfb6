"""T5 1.1 models (Flax linen) with T5X parameter names and logical axes."""
from irl_lm.models.t5 import (DecodeState, EncoderDecoderModel, Params, T5Config, T5Transformer,
                              t5_1_1_config)

__all__ = ["DecodeState", "EncoderDecoderModel", "Params", "T5Config", "T5Transformer",
           "t5_1_1_config"]
