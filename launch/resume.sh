#!/usr/bin/env bash
# Resumes an experiment after a preemption or a crash: the trainer restores the newest
# complete checkpoint in the run directory (and refuses a directory whose config differs).
#   launch/resume.sh gin/iqlearn_xl.gin my_experiment
exec "$(dirname "$0")/run.sh" "$@"
