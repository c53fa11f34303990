"""Tests of tf_metaprune.distribute: training and search under tf.distribute.

The distributed runs happen in child processes (tests/distributed_worker.py):
logical CPU devices must be configured before TensorFlow initializes, and a
MultiWorkerMirroredStrategy needs one process per worker. Their reports are
compared with the same `distributed_worker.run()` on one device in a fresh
process: same global batch, same seed, same everything.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys
import types

import numpy as np
import pytest
import tensorflow as tf

import distributed_worker
import tf_metaprune as tfmp

ROOT = pathlib.Path(__file__).resolve().parent.parent
WORKER = str(ROOT / "tests" / "distributed_worker.py")
EPOCHS = 3


def _fake_multi_worker(task_type="worker", task_id=0, cluster=None):
  """An object shaped like a MultiWorkerMirroredStrategy (no runtime set-up)."""
  cluster = cluster or {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
  resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
      tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id, rpc_layer="grpc")
  return types.SimpleNamespace(cluster_resolver=resolver, num_replicas_in_sync=2)


# ---- strategy names, TF_CONFIG, the chief -------------------------------------------------------


def test_unknown_strategy_name_is_quoted_with_the_choices():
  with pytest.raises(ValueError, match=r"strategy='tpu' is not one of .*'multi_worker'"):
    tfmp.distribute.get_strategy("tpu")


def test_default_strategy_is_one_replica_and_its_process_is_chief():
  strategy = tfmp.distribute.get_strategy("default")
  assert tfmp.distribute.num_replicas(strategy) == 1
  assert tfmp.distribute.is_chief(strategy) and not tfmp.distribute.is_multi_worker(strategy)


def test_multi_worker_without_tf_config_names_the_variable_and_the_way_out(monkeypatch):
  monkeypatch.delenv("TF_CONFIG", raising=False)
  with pytest.raises(ValueError, match=r"TF_CONFIG environment variable, which is not set.*--strategy=default"):
    tfmp.distribute.get_strategy("multi_worker")


@pytest.mark.parametrize("text,match", [
    ("{cluster:", r"TF_CONFIG='\{cluster:' is not valid JSON"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 3}}', r"task index 3 is not in \[0, 1\)"),
    ('{"cluster": {"ps": ["h:1"]}, "task": {"type": "ps", "index": 0}}', r"no 'worker' \(or 'chief'\) job, only \['ps'\]"),
    ('{"cluster": {"worker": ["no-port"]}, "task": {"type": "worker"}}', r"'host:port' addresses"),
])
def test_malformed_tf_config_is_quoted(monkeypatch, text, match):
  monkeypatch.setenv("TF_CONFIG", text)
  with pytest.raises(ValueError, match=match):
    tfmp.distribute.get_strategy("multi_worker")


def test_chief_is_worker_zero_or_the_chief_task():
  assert tfmp.distribute.is_chief(_fake_multi_worker("worker", 0))
  assert not tfmp.distribute.is_chief(_fake_multi_worker("worker", 1))
  with_chief = {"chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2"]}
  assert tfmp.distribute.is_chief(_fake_multi_worker("chief", 0, with_chief))
  assert not tfmp.distribute.is_chief(_fake_multi_worker("worker", 0, with_chief))
  assert tfmp.distribute.task_name(_fake_multi_worker("worker", 1)) == "worker:1"


def test_lost_worker_error_names_the_dead_task_and_the_resume_point():
  error = tf.errors.UnavailableError(None, None, (
      "Graph execution error:\n\nDetected at node CollectiveReduceV2 defined at (most recent call last):\n"
      "Collective ops is aborted by: The following tasks are unhealthy (stopped sending heartbeats):\n"
      "/job:worker/replica:0/task:1\nThe tasks have crashed."))
  lost = tfmp.distribute.worker_lost_error(error, _fake_multi_worker("worker", 0), "resumes from /runs/backup")
  assert isinstance(lost, tfmp.distribute.WorkerLostError)
  assert "/job:worker/replica:0/task:1 stopped sending heartbeats" in str(lost)
  assert "this is worker:0" in str(lost) and "resumes from /runs/backup" in str(lost)
  # One process: a collective error is not a lost worker.
  assert tfmp.distribute.worker_lost_error(error, tfmp.distribute.get_strategy("default")) is None


def test_non_chief_trains_and_searches_without_writing_files(tmp_path, monkeypatch):
  monkeypatch.setattr(tfmp.distribute, "is_chief", lambda strategy=None: False)
  train, evaluation = distributed_worker.data()
  net = tfmp.PruningNet(tfmp.models.small_cnn((8, 8, 1), 4, channels=(4, 4, 4, 4), divisor=1), hidden_units=0)
  history = tfmp.training.fit(net, train.take(2), epochs=1, output_dir=str(tmp_path / "run"), verbose=0)
  config = tfmp.EvolutionConfig(population_size=4, top_k=2, num_mutations=2, num_crossovers=2, num_generations=1)
  found = tfmp.search.evolutionary(net, evaluation, None, config, state_path=str(tmp_path / "state.json"), verbose=0)
  assert len(history["loss"]) == 1 and len(found.candidates) == 4
  assert list(tmp_path.iterdir()) == []


# ---- the distributed runs -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
  """The single-process reference: the worker script on one device, in a fresh process.

  (Run in this pytest process, its result depended on what earlier tests had done to the global random
  state and devices; a fresh process is what the distributed runs are compared with.)
  """
  folder = tmp_path_factory.mktemp("one_device")
  out = folder / "one_device.json"
  proc = subprocess.run([sys.executable, WORKER, "--strategy=default", f"--out={out}", f"--output_dir={folder / 'run'}",
                         f"--epochs={EPOCHS}", "--search", "--sandwich"], env=_env(), capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(out.read_text())


def _env():
  env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
  env.pop("TF_CONFIG", None)
  return env


def _assert_same_run(report, reference, losses_from_epoch=0):
  assert report["loss"] == pytest.approx(reference["loss"][losses_from_epoch:], rel=1e-5, abs=1e-6)
  assert report["iterations"] == reference["iterations"]
  np.testing.assert_allclose(report["weights"], reference["weights"], rtol=1e-5)
  assert report["accuracy"] == pytest.approx(reference["accuracy"], abs=1e-6)
  assert [c for c, _ in report["search"]] == [c for c, _ in reference["search"]]
  assert [a for _, a in report["search"]] == pytest.approx([a for _, a in reference["search"]], abs=1e-6)


@pytest.mark.slow
def test_mirrored_over_two_cpus_follows_the_one_device_trajectory(tmp_path, one_device):
  out = tmp_path / "mirrored.json"
  proc = subprocess.run([sys.executable, WORKER, "--strategy=mirrored", "--logical_cpus=2", f"--out={out}",
                         f"--output_dir={tmp_path / 'run'}", f"--epochs={EPOCHS}", "--search", "--sandwich"],
                        env=_env(), capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads(out.read_text())
  assert report["replicas"] == 2
  # Both replicas drew the same structure for the step.
  assert report["sampled_per_replica"][0] == report["sampled_per_replica"][1]
  _assert_same_run(report, one_device)
  assert report["sandwich_loss"] == pytest.approx(one_device["sandwich_loss"], rel=1e-5)


def _free_ports(n):
  socks = [socket.socket() for _ in range(n)]
  for s in socks:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in socks]
  for s in socks:
    s.close()
  return ports


def _launch_workers(tmp_path, tag, ports, extra_for_worker_1=()):
  cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
  procs = []
  for i in range(2):
    env = dict(_env(), TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}))
    args = [sys.executable, WORKER, "--strategy=multi_worker", f"--out={tmp_path / f'{tag}{i}.json'}",
            f"--output_dir={tmp_path / 'run'}", f"--epochs={EPOCHS}", "--search"]
    if i == 1:
      args += list(extra_for_worker_1)
    procs.append(subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  outputs = []
  for p in procs:
    try:
      _, err = p.communicate(timeout=600)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
    outputs.append((p.returncode, err))
  return outputs


@pytest.mark.slow
def test_two_workers_fail_clearly_when_one_dies_and_resume_to_the_one_device_result(tmp_path, one_device):
  ports = _free_ports(2)
  # Run 1: worker 1 is SIGKILLed when epoch 1 begins (after the chief backed up epoch 0).
  (code0, err0), (code1, err1) = _launch_workers(tmp_path, "killed", ports, ["--die_at_epoch=1"])
  assert code1 == -9, err1[-3000:]
  assert code0 == 3, err0[-3000:]         # the worker script's exit code for WorkerLostError
  error = json.loads((tmp_path / "killed0.json").read_text())["error"]
  assert "lost a worker: /job:worker/replica:0/task:1 stopped sending heartbeats" in error
  assert "resumes at the last finished epoch from" in error
  assert json.loads((tmp_path / "run" / "backup" / "state.json").read_text())["epoch"] == 1   # epochs finished

  # Run 2: the same command on both workers resumes at epoch 1, trains, searches.
  outputs = _launch_workers(tmp_path, "resumed", _free_ports(2))
  assert [code for code, _ in outputs] == [0, 0], outputs[0][1][-3000:] + outputs[1][1][-3000:]
  chief, other = (json.loads((tmp_path / f"resumed{i}.json").read_text()) for i in range(2))
  assert chief["replicas"] == 2 and chief["chief"] and not other["chief"]
  assert chief["epochs_run"] == other["epochs_run"] == list(range(1, EPOCHS))   # resumed, not restarted
  _assert_same_run(chief, one_device)     # the history covers every epoch, the resumed ones included
  _assert_same_run(other, one_device)
  assert (tmp_path / "run" / "search_state.json").exists()
  # The chief's checkpoint says every epoch is done: a rerun would not train again.
  assert json.loads((tmp_path / "run" / "backup" / "state.json").read_text())["epoch"] == EPOCHS


@pytest.mark.slow
def test_metaprune_binary_on_two_local_workers_finishes_and_only_the_chief_writes_the_report(tmp_path):
  # examples/metaprune.py --strategy=multi_worker, every stage, two worker processes on 127.0.0.1 sharing one folder.
  cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
  args = ["--model=small_cnn", "--divisor=1", "--max_examples=400", "--input_size=12", "--batch_size=32", "--epochs=1",
          "--hidden_units=4", "--flops_ratio=0.5", "--population_size=4", "--num_generations=1", "--retrain_epochs=1",
          "--num_runs=1", "--verbose=0", "--strategy=multi_worker", f"--output_dir={tmp_path / 'run'}"]
  procs = [subprocess.Popen([sys.executable, str(ROOT / "examples" / "metaprune.py"), *args], text=True,
                            env=dict(_env(), TF_CONFIG=json.dumps({"cluster": cluster,
                                                                   "task": {"type": "worker", "index": i}})),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
  try:
    (out0, err0), (out1, err1) = (p.communicate(timeout=300) for p in procs)
  finally:
    for p in procs:
      p.kill()
  assert [p.returncode for p in procs] == [0, 0], err0[-3000:] + err1[-3000:]
  report = json.loads((tmp_path / "run" / "report.json").read_text())
  assert set(report["rows"]) == {"searched", "uniform"} and "Stage time" in out0
  assert "worker:1 finished; the chief writes the report" in out1 and "Stage time" not in out1
  # Each stage recorded once, finished (worker 1 records nothing: a second writer would race the chief's files).
  records = {f.stem: json.loads(f.read_text()) for f in (tmp_path / "run" / "stages").glob("*.json")}
  assert sorted(records) == sorted(["pruningnet", "search", "retrain_searched", "retrain_uniform", "export"])
  assert all(r["finished"] for r in records.values())
  assert not [f for f in (tmp_path / "run").rglob("*") if ".tmp" in f.name]   # no half-written file
