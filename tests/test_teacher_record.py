"""What a distillation run records and accepts about its teacher: summary.json names the teacher
copy the student actually distils (the one frozen in its checkpoint), not the teacher's newer
step; a CD run is accepted as `train.init_workdir` (its state's teacher is not needed) and refused
as a CD teacher with one line."""
import json

import pytest

import launch


def _run(workdir, config, *extra):
  return launch.main(["launch.py", "--config", config, "--workdir", str(workdir),
                      "--config.eval.num_samples=256", *extra])


@pytest.mark.slow
def test_resumed_student_records_the_teacher_it_distils(tmp_path, capsys):
  teacher, student = tmp_path / "edm", tmp_path / "cd"
  fast = ["--config.train.checkpoint_every=2", "--config.train.log_every=1", "--config.eval.at_end=False"]
  assert _run(teacher, "toy2d_edm", "--config.train.num_steps=2", *fast) == 0
  assert _run(student, "toy2d_cd", f"--config.cd.teacher_workdir={teacher}",
              "--config.train.num_steps=2", *fast) == 0
  first = json.load(open(student / "summary.json"))["teacher"]
  assert first == {"workdir": str(teacher), "step": 2}
  assert _run(teacher, "toy2d_edm", "--config.train.num_steps=4", *fast) == 0  # the teacher trains on
  assert _run(student, "toy2d_cd", f"--config.cd.teacher_workdir={teacher}",
              "--config.train.num_steps=4", *fast) == 0      # resumes with its frozen teacher copy
  assert json.load(open(student / "summary.json"))["teacher"] == {"workdir": str(teacher), "step": 2}
  # a CD run can start another run (train.init_workdir), but is not an EDM teacher
  assert _run(tmp_path / "ect", "toy2d_ect", f"--config.train.init_workdir={student}",
              "--config.train.num_steps=2", *fast) == 0
  capsys.readouterr()
  assert _run(tmp_path / "cd2", "toy2d_cd", f"--config.cd.teacher_workdir={student}",
              "--config.train.num_steps=2") == 2
  err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("cmjax:")]
  assert len(err) == 1 and "trained with method 'cd'" in err[0], err
