"""Parallel training and inference: threads inside a process (:mod:`.threads`), and data
parallelism over processes and machines with MPI (:mod:`.mpi`, needs ``numcnn[mpi]``).

See docs/parallel.md.
"""
from .threads import get_num_threads, set_num_threads, usable_cores

__all__ = ["set_num_threads", "get_num_threads", "usable_cores"]
