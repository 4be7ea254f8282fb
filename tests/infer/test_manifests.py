"""Manifests: CSV, JSON lines and the official demo.csv rows; sharding jobs across hosts."""
import pytest

from pcavs_jax.data.media import InputError
from pcavs_jax.infer import manifests
from pcavs_jax.infer.jobs import JobSpec, RowError


def test_csv_manifest(tmp_path):
  (tmp_path / "jobs.csv").write_text(
      "reference,audio,pose,mouth_source,output\n"
      "photo.png,speech.wav,pose.mp4,,first\n"
      "photo.png,speech.wav,,,\n"
      "# a comment\n"
      ",speech.wav,,,no_reference\n"
      "photo.png,speech.wav,,,../escape\n")
  jobs = manifests.read_manifest(tmp_path / "jobs.csv")
  assert [type(j) for j in jobs] == [JobSpec, JobSpec, RowError, RowError]
  assert jobs[0].name == "first" and jobs[0].pose == str(tmp_path / "pose.mp4")
  assert jobs[0].reference == str(tmp_path / "photo.png") and jobs[0].row == 2
  assert jobs[1].name == "photo_speech" and jobs[1].pose is None
  assert "missing reference" in jobs[2].problem and jobs[2].row == 5
  assert "output name" in jobs[3].problem


def test_jsonl_manifest(tmp_path):
  (tmp_path / "jobs.jsonl").write_text(
      '{"reference": "photo.png", "audio": "speech.wav", "name": "a/b"}\n'
      '{"reference": "photo.png"}\n'
      'not json\n'
      '[1, 2]\n')
  jobs = manifests.read_manifest(tmp_path / "jobs.jsonl")
  assert isinstance(jobs[0], JobSpec) and jobs[0].name == "a/b"
  assert isinstance(jobs[1], RowError) and "missing audio" in jobs[1].problem
  assert isinstance(jobs[2], RowError) and "JSON" in jobs[2].problem
  assert isinstance(jobs[3], RowError)


def test_official_demo_csv_rows(tmp_path):
  (tmp_path / "misc" / "Input" / "517600055").mkdir(parents=True)
  (tmp_path / "misc" / "Pose_Source" / "517600078").mkdir(parents=True)
  (tmp_path / "misc" / "Mouth_Source" / "681600002").mkdir(parents=True)
  (tmp_path / "demo.csv").write_text(
      "misc/Input/517600055 1 misc/Pose_Source/517600078 160 misc/Audio_Source/681600002.mp3 "
      "misc/Mouth_Source/681600002 363 dummy\n"
      "misc/Input/517600055 1 None 1 misc/Audio_Source/681600002.mp3 None 0 dummy\n"
      "misc/Input/517600055 1 misc/Pose_Source/517600078 160 audio.mp3 dummy\n")
  jobs = manifests.read_manifest(tmp_path / "demo.csv")
  a, b, c = jobs
  assert a.name == "id_517600055_pose_517600078_audio_681600002"
  assert a.reference == str(tmp_path / "misc/Input/517600055")
  assert a.pose.endswith("517600078") and a.num_pose_frames == 160 and a.num_references == 1
  assert a.mouth_source.endswith("681600002") and a.num_mouth_frames == 363 and a.mel is None
  # Not a folder: the official loader holds the reference's own pose.
  assert b.pose is None and b.name == "id_517600055_pose_517600055_audio_681600002"
  assert isinstance(c, RowError) and "8 space-separated fields" in c.problem


def test_manifest_without_required_columns_is_refused(tmp_path):
  (tmp_path / "jobs.csv").write_text("image,sound\nphoto.png,speech.wav\n")
  with pytest.raises(InputError, match="'reference' and 'audio'"):
    manifests.read_manifest(tmp_path / "jobs.csv")
  with pytest.raises(InputError, match="manifest not found"):
    manifests.read_manifest(tmp_path / "none.csv")
  (tmp_path / "empty.csv").write_text("\n# nothing\n")
  with pytest.raises(InputError, match="no rows"):
    manifests.read_manifest(tmp_path / "empty.csv")


def test_shard_jobs_across_hosts():
  jobs = list(range(7))
  shards = [manifests.shard_jobs(jobs, i, 3) for i in range(3)]
  assert shards == [[0, 3, 6], [1, 4], [2, 5]]
  assert sorted(sum(shards, [])) == jobs
  with pytest.raises(ValueError):
    manifests.shard_jobs(jobs, 3, 3)
  assert manifests.results_path("o", 1, 4).name == "results-001-of-004.jsonl"
  assert manifests.results_path("o").name == "results.jsonl"
