"""`python -m irl_lm.convert --from A --to B [--format hf|t5x|orbax]`: see `irl_lm.jobs.convert`."""
from absl import app

from irl_lm import errors
from irl_lm.jobs import convert

if __name__ == "__main__":
  app.run(convert.main, flags_parser=errors.flags_parser("python -m irl_lm.convert",
                                                         convert.__doc__, convert.__name__))
