"""WMT22 en-de from TSV and sacrebleu's local layout (text files and raw XML), never the network."""
import os

import pytest
import seqio

from irl_lm.data import errors, pipeline, wmt
from tests.data import helpers

LENGTHS = {"inputs": 64, "targets": 48}


WMT21_XML = """<?xml version="1.0" encoding="utf-8"?>
<dataset id="newstest2021">
 <collection id="general">
  <doc id="doc1" origlang="en">
   <src lang="en"><p><seg id="1">Good  morning.</seg><seg id="2">Thank you.</seg></p></src>
   <ref lang="de" translator="A"><p><seg id="1">Guten Morgen.</seg><seg id="2">Danke.</seg></p>
   </ref>
  </doc>
 </collection>
</dataset>
"""


def test_wmt22_en_de_tsv_and_sacrebleu_layout(tmp_path, temp_task_names):
  # Training TSV with German first (as news-commentary's de-en files), a short line and an
  # empty side, both skipped.
  helpers.write_lines(str(tmp_path / "train" / "nc.de-en.tsv"),
               ["Hallo Welt.\tHello world.", "kaputt", "\tonly English", "Danke.\tThanks."])
  sacre = tmp_path / "sacrebleu"
  helpers.write_lines(str(sacre / "wmt22" / "wmt22.en-de.src"), ["The cat.", "A  dog ran."])
  helpers.write_lines(str(sacre / "wmt22" / "wmt22.en-de.ref-A"), ["Die Katze.", "Ein Hund lief."])
  with open(sacre / "wmt22" / "wmt22.en-de.ref-B", "w") as f:
    f.write("wrong reference\nwrong\n")
  # wmt21 only as sacrebleu's unpacked raw XML, parsed offline with sacrebleu's reader.
  xml_path = sacre / "wmt21" / "raw" / "test" / "newstest2021.en-de.xml"
  os.makedirs(xml_path.parent)
  xml_path.write_text(WMT21_XML)
  temp_task_names.append("wmt_t")
  wmt.register("wmt_t", train_files=[str(tmp_path / "train" / "*.tsv")],
               sacrebleu_dir=str(sacre), tsv_columns=(1, 0),
               vocabulary_path=helpers.STDLIB_SPM)
  text = lambda split: [(ex["inputs_text"], ex["targets_text"]) for ex in pipeline.get_examples(
      "wmt_t", split, num_examples=None, feature_lengths=LENGTHS)]
  prefix = "translate English to German: "
  assert text("train") == [(prefix + "Hello world.", "Hallo Welt."),
                           (prefix + "Thanks.", "Danke.")]
  assert text("test") == [(prefix + "The cat.", "Die Katze."),
                          (prefix + "A dog ran.", "Ein Hund lief.")]  # sacrebleu's cleaning
  assert text("validation") == [(prefix + "Good morning.", "Guten Morgen."),
                                (prefix + "Thank you.", "Danke.")]
  batches = pipeline.get_batches("wmt_t", "train", feature_lengths=LENGTHS, batch_size=2,
                                 shuffle=True, seed=1,
        feature_converter=seqio.EncDecFeatureConverter(pack=False))
  assert next(batches)["encoder_input_tokens"].shape == (2, LENGTHS["inputs"])


def test_wmt22_missing_data_messages(tmp_path, temp_task_names):
  temp_task_names.append("wmt_missing")
  wmt.register("wmt_missing", train_files=[str(tmp_path / "none.tsv")],
               sacrebleu_dir=str(tmp_path / "sb"), vocabulary_path=helpers.STDLIB_SPM)
  with pytest.raises(errors.MissingDatasetError) as err:
    pipeline.get_examples("wmt_missing", "test", num_examples=1, feature_lengths=LENGTHS)
  message = str(err.value)
  assert f"needs {tmp_path / 'sb' / 'wmt22' / 'wmt22.en-de.src'}" in message
  assert "`sacrebleu -t wmt22 -l en-de --echo src > /dev/null`" in message
  with pytest.raises(errors.MissingDatasetError, match=r"none\.tsv.*tsv_columns = \(1, 0\)"):
    pipeline.get_batches("wmt_missing", "train", feature_lengths=LENGTHS, batch_size=2,
                         shuffle=True, seed=0,
        feature_converter=seqio.EncDecFeatureConverter(pack=False))
  assert not os.path.exists(tmp_path / "sb")
