#!/usr/bin/env bash
# Resumes an experiment after a preemption or a crash: the trainer restores the newest intact
# checkpoint in the run directory (and refuses a directory whose config differs). To rerun
# automatically after every preemption, use launch/auto_resume.sh.
#   launch/resume.sh gin/iqlearn_xl.gin my_experiment
exec "$(dirname "$0")/run.sh" "$@"
