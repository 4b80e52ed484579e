"""Scale out with Ray (the optional extra ``onnxplain[ray]``): the one place that imports Ray.

:class:`Cluster` connects to a Ray cluster (an address, or the local instance: joined when one runs,
started otherwise), starts a pool of worker actors — each holds one object built once (a statistics
graph's session, an Explainer) — and streams shards to them; results come back as they are ready. A
worker that dies is restarted by Ray and its shards are retried (actor ``max_restarts``,
``max_task_retries``); one progress count for the whole job. The shard logic lives with its users and
needs no Ray: :mod:`onnxplain.patterns.shards` (fitting) and :mod:`onnxplain.files_parallel` (explaining
folders).

Ray is imported inside the functions: ``import onnxplain.distributed`` works without it, and using it
without Ray installed is one :class:`~onnxplain.errors.OnnxplainError` line.
"""
from .cluster import Cluster, require_ray  # noqa: F401

__all__ = ["Cluster", "require_ray"]
