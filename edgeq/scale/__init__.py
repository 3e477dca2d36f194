"""Scale-out: one function over many items as Ray tasks (embedded, or on a cluster), or serially without Ray.

See edgeq.scale.tasks and docs/scale-out.md.
"""

from edgeq.scale.tasks import check_address, map_tasks, task_threads

__all__ = ["check_address", "map_tasks", "task_threads"]
