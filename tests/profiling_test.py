"""Tests for emotion_tfds.train.profiling: a profile of chosen training steps in a real run (on
`support.generated_data_dir`), read back as TensorBoard's Profile tab reads it."""

from __future__ import annotations

import json

from absl.testing import absltest
import support
from tensorflow.tsl.profiler.protobuf import xplane_pb2
import train_support
from xprof.convert import raw_to_tool_data

from emotion_tfds.train import loop
from emotion_tfds.train import profiling


class ProfileTest(support.WithGeneratedData, absltest.TestCase):

  def test_profile_steps_write_a_readable_profile_of_the_first_stage_that_reaches_them(self):
    model_dir = support.tempdir(self)
    # The head stage runs 2 steps, short of step 3; the all stage's steps 2-3 span its two epochs.
    config = train_support.train_config(model_dir, self.data_dir, "head:1:1e-3:16,all:2:1e-3:16",
                                        profile_steps=(2, 3))
    loop.train(config)
    tb = model_dir / loop.TENSORBOARD_DIR
    self.assertEqual(list(tb.glob(f"*/{profiling.PROFILE_DIR}")),
                     [tb / "stage2_all" / profiling.PROFILE_DIR])
    (path,) = (tb / "stage2_all" / profiling.PROFILE_DIR).glob("*/*.xplane.pb")
    space = xplane_pb2.XSpace.FromString(path.read_bytes())
    host = {plane.name: plane for plane in space.planes}["/host:CPU"]
    events = {event.name for event in host.event_metadata.values()}
    self.assertTrue(any("multi_step_on_iterator" in name for name in events))  # Keras's step.
    # What TensorBoard's Profile tab shows, through the plugin's own converter: the two profiled
    # steps (the step markers) and the verdict on the input pipeline.
    data, _ = raw_to_tool_data.xspace_to_tool_data([str(path)], "input_pipeline_analyzer", {})
    step_table = json.loads(data)[1]
    self.assertEqual([row["c"][0]["v"] for row in step_table["rows"]], ["train 2", "train 3"])
    # xprof's four verdicts; which one depends on how busy the machine was during the two steps.
    self.assertRegex(step_table["p"]["input_conclusion"],
                     r"^Your program is (NOT|POTENTIALLY|MODERATELY|HIGHLY) input-bound because ")


if __name__ == "__main__":
  absltest.main()
