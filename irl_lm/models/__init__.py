"""Model families behind one seam (`irl_lm.models.base.Model`): T5 1.1 (Flax linen) with T5X
parameter names and logical axes, and GAIL's discriminator."""
from irl_lm.models.base import EOS_ID, PAD_ID, Model
from irl_lm.models.t5 import (DecodeState, EncoderDecoderModel, Params, T5Config, T5Transformer,
                              t5_1_1_config)

__all__ = ["DecodeState", "EOS_ID", "EncoderDecoderModel", "Model", "PAD_ID", "Params",
           "T5Config", "T5Transformer", "t5_1_1_config"]
