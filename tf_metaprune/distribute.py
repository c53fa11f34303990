"""Training and search on many devices and machines with `tf.distribute`.

tf_metaprune uses TensorFlow's own engine to scale out -- `MirroredStrategy`
(the devices of one machine) and `MultiWorkerMirroredStrategy` (several
machines, configured by the `TF_CONFIG` environment variable) -- never a
home-made one. This module picks the strategy by name and holds the small
helpers the rest of the library needs:

* `get_strategy(name)`: "default" | "mirrored" | "multi_worker", the values of
  the binaries' `--strategy` flag. Create the strategy *first* (before any
  other TensorFlow op: MultiWorkerMirroredStrategy configures the runtime),
  then build the PruningNet / model under `strategy.scope()` so its variables
  and its optimizer's are mirrored.
* `is_chief(strategy)`: one worker writes files (checkpoints, search state,
  results); all workers compute.
* `all_reduce_sum(values)`: exact cross-replica sums (batch-norm moments,
  correct-prediction counts) inside `strategy.run`.
* `WorkerLostError`: what a multi-worker job raises when a worker dies, with
  the way back (rerun every worker; training resumes from the last backup).

What runs where (see docs/distributed.md):

* Training (`tf_metaprune.training.fit`): Keras distributes every step; each
  replica runs its share of the global batch. The PruningNet draws its
  structure *in the graph* from `tf.random.stateless_uniform(seed=(seed,
  optimizer.iterations))`: the iteration counter is a mirrored variable, so
  every replica of every worker draws the same structure in the same step,
  with no Python-side randomness and no per-replica random state (as
  TPUStrategy needs). Batch-norm moments are summed over all replicas
  (`sync_batch_norm=True`), so a step on R replicas is the step on one device
  with the same global batch.
* Search (`tf_metaprune.Evaluator`, used by every searcher): each candidate's
  calibration and evaluation batches are split across all replicas of all
  workers; BN moments and correct/total counts are summed across replicas
  (exact: sums, never averages of averages). Every worker runs the same
  deterministic search loop; only the chief writes the state file.

Example (one binary, any strategy):

  >>> strategy = tfmp.distribute.get_strategy("multi_worker")   # reads TF_CONFIG
  >>> with strategy.scope():
  ...   net = tfmp.PruningNet(space)
  >>> tfmp.training.fit(net, splits.train, epochs=10, output_dir="/shared/run")
  >>> found = tfmp.search.evolutionary(net, splits, budget,
  ...                                  state_path="/shared/run/search_state.json")
  >>> if tfmp.distribute.is_chief(strategy):
  ...   found.save("/shared/run/search_result.json")
"""

import json
import os
import re

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker")

# Errors the TF runtime raises when a peer of a collective op disappears.
_PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError,
                tf.errors.CancelledError)


class WorkerLostError(RuntimeError):
  """A worker of a multi-worker job stopped; rerun all workers to resume."""


def parse_tf_config(tf_config=None):
  """Reads and checks a `TF_CONFIG` (the multi-worker cluster description).

  `TF_CONFIG` is JSON: `{"cluster": {"worker": ["host0:port", "host1:port"]},
  "task": {"type": "worker", "index": 0}}` (optionally a "chief" job of one
  address). Every worker gets the same "cluster" and its own "task".

  Args:
    tf_config: a dict, a JSON string, or None to read the `TF_CONFIG`
      environment variable.

  Returns:
    The parsed dict (cluster, task).

  Raises:
    ValueError: quoting the value, if it is missing, not JSON, or its task
      does not name a job and index of its cluster.
  """
  how = ('set TF_CONFIG=\'{"cluster": {"worker": ["host0:port", "host1:port"]}, '
         '"task": {"type": "worker", "index": 0}}\' (index = this worker\'s position) on every worker, '
         'or use --strategy=default|mirrored on one machine')
  if tf_config is None:
    text = os.environ.get("TF_CONFIG")
    if not text:
      raise ValueError(f"strategy 'multi_worker' needs the TF_CONFIG environment variable, which is "
                       f"{'empty' if text == '' else 'not set'}; {how}")
    source = f"TF_CONFIG={text!r}"
  elif isinstance(tf_config, dict):
    text, source = None, f"tf_config={tf_config!r}"
    config = tf_config
  else:
    text, source = str(tf_config), f"tf_config={tf_config!r}"
  if text is not None:
    try:
      config = json.loads(text)
    except json.JSONDecodeError as e:
      raise ValueError(f"{source} is not valid JSON ({e}); {how}") from None
  if not isinstance(config, dict):
    raise ValueError(f"{source} must be a JSON object with 'cluster' and 'task'; {how}")
  cluster, task = config.get("cluster"), config.get("task")
  if not isinstance(cluster, dict) or not cluster or not all(
      isinstance(v, list) and v and all(isinstance(a, str) and ":" in a for a in v) for v in cluster.values()):
    raise ValueError(f"{source}: 'cluster' must map job names to lists of 'host:port' addresses; {how}")
  if "worker" not in cluster and "chief" not in cluster:
    raise ValueError(f"{source}: the cluster has no 'worker' (or 'chief') job, only {sorted(cluster)}; {how}")
  if "chief" in cluster and len(cluster["chief"]) != 1:
    raise ValueError(f"{source}: a cluster has at most one chief, got {cluster['chief']!r}")
  if not isinstance(task, dict) or task.get("type") not in cluster:
    raise ValueError(f"{source}: 'task' must name this process's job, one of {sorted(cluster)}, got {task!r}; "
                     f"{how}")
  index = task.get("index", 0)
  if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(cluster[task["type"]]):
    raise ValueError(f"{source}: task index {index!r} is not in [0, {len(cluster[task['type']])}) for job "
                     f"{task['type']!r}; {how}")
  return {"cluster": cluster, "task": {"type": task["type"], "index": index}}


def get_strategy(name="default", tf_config=None, devices=None):
  """The `tf.distribute.Strategy` named by a `--strategy` flag value.

  Call it once, at the start of the program, before other TensorFlow work,
  and build models under `strategy.scope()` (`training.fit` makes the
  optimizer under the model's strategy). One strategy per process: a second
  MirroredStrategy in the same process can collide with the first one's
  collective operations ("Shape mismatch in the collective instance").

  Args:
    name: "default" (no distribution: one device, TensorFlow's default
      strategy), "mirrored" (`MirroredStrategy`: synchronous data parallelism
      over the devices of this machine -- all GPUs, or all logical CPU
      devices if there is no GPU) or "multi_worker"
      (`MultiWorkerMirroredStrategy` over the machines of `TF_CONFIG`; every
      worker runs the same program).
    tf_config: for "multi_worker": the cluster as a dict or JSON string
      instead of the `TF_CONFIG` environment variable.
    devices: for "mirrored": device names to use instead of all of them.

  Returns:
    A `tf.distribute.Strategy`.

  Raises:
    ValueError: for another name (quoting it), or a missing/malformed
      `TF_CONFIG` with "multi_worker".

  Example:

    >>> strategy = get_strategy("mirrored")
    >>> with strategy.scope():
    ...   net = tf_metaprune.PruningNet(space)
  """
  if name not in STRATEGIES:
    raise ValueError(f"strategy={name!r} is not one of {STRATEGIES}: 'default' for one device, 'mirrored' for "
                     "all devices of this machine, 'multi_worker' for several machines (with TF_CONFIG)")
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    if devices is None:
      gpus = tf.config.list_logical_devices("GPU")
      devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
    return tf.distribute.MirroredStrategy(devices=list(devices))
  config = parse_tf_config(tf_config)
  cluster_spec = tf.train.ClusterSpec(config["cluster"])
  resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
      cluster_spec, task_type=config["task"]["type"], task_id=config["task"]["index"], rpc_layer="grpc")
  return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)


def _task(strategy):
  """(task_type, task_id, cluster dict) of a multi-worker strategy, else None."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not getattr(resolver, "task_type", None):
    return None
  return resolver.task_type, int(resolver.task_id or 0), resolver.cluster_spec().as_dict()


def is_multi_worker(strategy=None) -> bool:
  """True for a strategy spanning more than one worker process."""
  task = _task(strategy or tf.distribute.get_strategy())
  return task is not None and sum(len(v) for k, v in task[2].items() if k in ("chief", "worker")) > 1


def is_chief(strategy=None) -> bool:
  """Whether this process writes the job's files (checkpoints, search state, results).

  The chief is the "chief" task if the cluster has one, else worker 0; with
  one process (default or mirrored strategy) it is always this one.

  Args:
    strategy: a `tf.distribute.Strategy` (default: the current one).
  """
  task = _task(strategy or tf.distribute.get_strategy())
  if task is None:
    return True
  task_type, task_id, cluster = task
  if task_type == "chief":
    return True
  return task_type == "worker" and task_id == 0 and "chief" not in cluster


def task_name(strategy=None) -> str:
  """'worker:1' / 'chief:0' for a multi-worker strategy, 'local' otherwise (for messages)."""
  task = _task(strategy or tf.distribute.get_strategy())
  return "local" if task is None else f"{task[0]}:{task[1]}"


def num_replicas(strategy=None) -> int:
  """Replicas in sync (all devices of all workers) of `strategy` (default: the current one)."""
  return int((strategy or tf.distribute.get_strategy()).num_replicas_in_sync)


def all_reduce_sum(values):
  """Sums a (nest of) tensors over all replicas; identity with one replica.

  Call it inside `strategy.run` (replica context) -- e.g. batch-norm moments,
  correct-prediction counts. Every replica gets the total. Exact aggregation
  means summing *sums* and *counts*, then dividing once.
  """
  ctx = tf.distribute.get_replica_context()
  if ctx is None or ctx.num_replicas_in_sync == 1:
    return values
  return ctx.all_reduce(tf.distribute.ReduceOp.SUM, values)


def replica_shard():
  """(this replica's index, number of replicas) in the current replica context.

  Use as `tf.range(index, num_items, num_replicas)` to give each replica every
  R-th item. Returns (0, 1) outside `strategy.run` or with one replica.
  """
  ctx = tf.distribute.get_replica_context()
  if ctx is None or ctx.num_replicas_in_sync == 1:
    return tf.constant(0, tf.int32), 1
  return tf.cast(ctx.replica_id_in_sync_group, tf.int32), int(ctx.num_replicas_in_sync)


def worker_lost_error(error, strategy=None, resume_hint=""):
  """A `WorkerLostError` explaining a collective failure, or None if `error` is something else.

  Args:
    error: the exception raised by a distributed step.
    strategy: the strategy (default: the current one).
    resume_hint: what a rerun resumes from (e.g. the backup directory).
  """
  if not isinstance(error, _PEER_ERRORS) or not is_multi_worker(strategy):
    return None
  text = str(getattr(error, "message", error))
  dead = re.search(r"tasks are unhealthy[^:]*:\s*((?:/job:\S+\s*)+)", text)
  if dead:
    cause = f"{' '.join(dead.group(1).split())} stopped sending heartbeats (crashed, killed or preempted)"
  else:
    lines = [l.strip() for l in text.splitlines() if l.strip() and not l.strip().startswith(
        ("Graph execution error", "Detected at node", "File ", "[["))]
    cause = (lines[0] if lines else text)[:400]
  return WorkerLostError(
      f"the multi-worker job lost a worker: {cause} ({type(error).__name__}; this is {task_name(strategy)}). "
      f"Restart every worker with the same TF_CONFIG and arguments; {resume_hint or 'nothing was saved'}")


def check_same_on_all_workers(values, what, strategy=None):
  """Raises ValueError unless every worker passes the same int `values`.

  Every worker must call it at the same point of the program (it is a
  collective operation); a no-op unless the strategy spans several workers.
  Used where workers read files the chief wrote (a resumed search), so a
  state file the other workers cannot see fails at once instead of letting
  the workers drift apart and hang.

  Args:
    values: a list of ints.
    what: what they are, for the message.
    strategy: the strategy (default: the current one).
  """
  strategy = strategy or tf.distribute.get_strategy()
  if not is_multi_worker(strategy):
    return
  local = tf.constant([list(values)], tf.int64)

  @tf.function
  def gather():
    return strategy.run(lambda: tf.distribute.get_replica_context().all_gather(local, axis=0))

  everyone = strategy.experimental_local_results(gather())[0].numpy()
  if not (everyone == everyone[0]).all():
    others = sorted({tuple(int(v) for v in row) for row in everyone})
    raise ValueError(f"the workers disagree on {what}: this worker ({task_name(strategy)}) has {list(values)}, "
                     f"the replicas of all workers have {others}. Every worker must read the same files: put them "
                     "on a filesystem all workers share (the chief writes, every worker reads)")
