"""Pure loss functions of (logits, targets, weights, segment ids, hyper-parameters)."""
from irl_lm.losses import gail
from irl_lm.losses import iqlearn
from irl_lm.losses import mle
from irl_lm.losses import soft_q
from irl_lm.losses.iqlearn import iqlearn_loss
from irl_lm.losses.iqlearn import iqlearn_online_loss
from irl_lm.losses.mle import mle_loss
from irl_lm.losses.soft_q import Sequences
from irl_lm.losses.soft_q import entropy
from irl_lm.losses.soft_q import implicit_rewards
from irl_lm.losses.soft_q import log_probs
from irl_lm.losses.soft_q import next_state_values
from irl_lm.losses.soft_q import state_values
from irl_lm.losses.soft_q import token_statistics

__all__ = [
    "gail",
    "iqlearn",
    "mle",
    "soft_q",
    "iqlearn_loss",
    "iqlearn_online_loss",
    "mle_loss",
    "Sequences",
    "entropy",
    "implicit_rewards",
    "log_probs",
    "next_state_values",
    "state_values",
    "token_statistics",
]
