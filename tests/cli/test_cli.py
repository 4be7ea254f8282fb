"""`pcavs-jax`: one error line for bad input (tracebacks with --verbose), and a quiet start."""
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess:
  env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP")}
  return subprocess.run([sys.executable, "-m", "pcavs_jax.cli.main", *args], capture_output=True,
                        text=True, cwd=REPO, env=env, timeout=300)


def test_a_bad_input_is_one_line_and_verbose_shows_the_traceback(tmp_path):
  result = _run("convert", "--official", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"))
  assert result.returncode == 2
  assert result.stderr.splitlines() == [
      f"pcavs-jax convert: error: official checkpoint folder not found: {tmp_path / 'nowhere'}"]
  verbose = _run("convert", "--verbose", "--official", str(tmp_path / "nowhere"),
                 "--out", str(tmp_path / "o"))
  assert verbose.returncode != 0 and "Traceback" in verbose.stderr


def test_tensorflow_says_nothing_by_default():
  code = ("import sys; from pcavs_jax.cli.quiet import set_quiet; set_quiet('-v' in sys.argv)\n"
          "import tensorflow as tf; tf.constant(1)\n")
  quiet = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
  loud = subprocess.run([sys.executable, "-c", code, "-v"], capture_output=True, text=True,
                        cwd=REPO)
  assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == ""
  assert "oneDNN" in loud.stderr or "cpu_feature_guard" in loud.stderr
