"""The :class:`Cluster`: a Ray connection and a pool of worker actors that work through shards."""
from __future__ import annotations

import collections
import logging
import os
import socket
import uuid

from ..errors import OnnxplainError, first_line

INSTALL = "pip install 'onnxplain[ray]'"
RETRIES = 3          # times a shard is retried on a restarted worker after its worker died
IN_FLIGHT = 2        # shards queued per worker: the next one waits in the worker while it works on one
POLL_S = 0.25        # how often the progress count is read while waiting


def require_ray():
    """The ``ray`` module, or one error line saying how to install it."""
    try:
        import ray
    except ImportError:
        raise OnnxplainError(f"the Ray engine needs Ray, which is not installed: {INSTALL}") from None
    return ray


def connect(address: str | None = None):
    """Connect to Ray: ``address`` ("HOST:PORT", "ray://HOST:PORT", "auto"), or with None the local instance
    (joined when one runs, else started on this machine). A connection already made is kept."""
    ray = require_ray()
    if ray.is_initialized():
        return ray
    quiet = {"logging_level": logging.ERROR, "log_to_driver": True}  # workers' errors still shown
    if address:
        _reachable(address)
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise OnnxplainError(f"cannot connect to the Ray cluster at {address}: {first_line(exc)}") from None
        return ray
    try:
        ray.init(address="auto", **quiet)
    except ConnectionError:  # none runs here: start one
        ray.init(include_dashboard=False, **quiet)
    return ray


def _reachable(address: str, timeout: float = 5.0):
    """Fail in seconds, with one line, when HOST:PORT (also ray://HOST:PORT) does not answer: Ray itself
    retries an unreachable address for minutes."""
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" and other forms Ray resolves itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise OnnxplainError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc} (start one with "
                             "`ray start --head`, or give --ray no address for a local instance)") from None


class _Job:
    """The job's state beside the workers: what builds a worker (a restarted worker reads it again) and the
    inputs done per shard (reported by the workers; a retried shard counts from 0 again)."""

    def __init__(self, setup):
        self.setup, self.done = setup, {}

    def recipe(self):
        return self.setup

    def report(self, shard: int, n: int):
        self.done[shard] = n

    def total(self) -> int:
        return sum(self.done.values())


class _Host:
    """A worker actor: holds ``factory(*args, **kwargs)``, built once, and calls it on shard after shard."""

    def __init__(self, job: str, crash_once=None):
        import ray

        # the job actor by name: an actor handle among the arguments would make Ray warn that a restart
        # may not find its arguments
        tracker = ray.get_actor(job)
        factory, args, kwargs = ray.get(tracker.recipe.remote())
        self.work = factory(*args, **kwargs)
        self.tracker, self.crash_once = tracker, crash_once

    def run(self, index: int, shard):
        if self.crash_once and not os.path.exists(self.crash_once):  # tests: die once, as a lost node would
            open(self.crash_once, "w").close()
            os._exit(1)
        import ray

        done = [0]

        def progress(n):
            done[0] += int(n)
            self.tracker.report.remote(index, done[0])

        result = self.work(shard, progress=progress)
        ray.get(self.tracker.report.remote(index, done[0]))  # counted before the result reaches the driver
        return result


class Cluster:
    """A Ray cluster to run workers on (a context manager: ``with Cluster(...) as c: c.map(...)``).

    ``workers``: actors in the pool (default: one per CPU of the cluster, or one per GPU when ``device`` is
    "cuda", or "auto" and the cluster has GPUs); each asks for one CPU (or a GPU), a share of the CPUs when
    more workers than CPUs are asked for. ``crash_once``: for tests, a path; the first shard run while it
    does not exist creates it and kills its worker process.
    """

    def __init__(self, address: str | None = None, *, workers: int | None = None, device: str = "auto",
                 retries: int = RETRIES, crash_once: str | None = None):
        self.address, self.device, self.retries, self.crash_once = address, device, int(retries), crash_once
        self._workers = workers
        if workers is not None and int(workers) < 1:
            raise OnnxplainError("workers must be ≥ 1")

    def __enter__(self):
        self.ray = connect(self.address)
        res = self.ray.cluster_resources()
        gpus = res.get("GPU", 0) >= 1 and self.device in ("auto", "cuda")
        if self.device == "cuda" and not gpus:
            raise OnnxplainError("device='cuda' but the Ray cluster has no GPU")
        have = int(res.get("GPU" if gpus else "CPU", 1)) or 1
        self.workers = int(self._workers or have)
        cpus = min(1.0, res.get("CPU", 1) / self.workers)
        self.resources = {"num_gpus": 1, "num_cpus": 1} if gpus else {"num_cpus": cpus}
        # threads a worker may decode inputs with: 1 beside one worker per CPU; a GPU worker gets the CPUs
        # of the cluster shared among the GPUs (Ray schedules it on one; decoding threads are not counted)
        self.decode_threads = max(1, int(res.get("CPU", 1) // self.workers)) if gpus else 1
        return self

    def __exit__(self, *exc):
        return False

    def map(self, factory, args: tuple, kwargs: dict, shards: list, progress=None):
        """Yield ``factory(*args, **kwargs)(shard, progress=...)`` for every shard, in the order they finish,
        each computed by one worker of a pool (the factory called once per worker)."""
        ray = self.ray
        host = ray.remote(_Host).options(max_restarts=-1, max_task_retries=self.retries, **self.resources)
        job = f"onnxplain-job-{uuid.uuid4().hex}"
        tracker = ray.remote(_Job).options(num_cpus=0, name=job).remote((factory, args, kwargs))
        actors = [host.remote(job, self.crash_once)
                  for _ in range(min(self.workers, len(shards)))]
        todo, inflight, shown = collections.deque(enumerate(shards)), {}, [0]

        def submit(actor):
            if todo:
                i, shard = todo.popleft()
                inflight[actor.run.remote(i, shard)] = (actor, i)

        def report():
            if progress is not None:
                total = ray.get(tracker.total.remote())
                if total > shown[0]:
                    progress(total - shown[0])
                    shown[0] = total

        for _ in range(IN_FLIGHT):
            for actor in actors:
                submit(actor)
        try:
            while inflight:
                ready, _ = ray.wait(list(inflight), num_returns=1, timeout=POLL_S)
                report()
                for ref in ready:
                    actor, i = inflight.pop(ref)
                    yield self._result(ref, i)
                    submit(actor)
            report()
        finally:
            for actor in actors:
                ray.kill(actor)
            ray.kill(tracker)

    def _result(self, ref, index: int):
        ray = self.ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, OnnxplainError):  # a user error in a worker: the same one line here
                raise OnnxplainError(str(exc.cause)) from None
            raise
        except ray.exceptions.RayActorError as exc:
            raise OnnxplainError(f"a Ray worker died on shard {index} and on its {self.retries} retries: "
                                 f"{first_line(exc)}") from None
