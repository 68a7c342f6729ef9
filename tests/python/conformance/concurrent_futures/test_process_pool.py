# Copied from CPython 3.13.0, Lib/test/test_concurrent_futures/test_process_pool.py
# (the copy the 3.13.0 interpreter ships in lib/python3.13/test/).
# Copyright (c) 2001-2024 Python Software Foundation; All Rights Reserved.
# Licensed under the PSF License Agreement, version 2: LICENSE-PSF.txt here.
# Run against multicore.Executor: every change is marked "# multicore:" and
# listed, with why, in docs/executor.md ("Differences from
# concurrent.futures"). The assertions are CPython's.

import os
import sys
import threading
import time
import unittest
from concurrent import futures
from concurrent.futures.process import BrokenProcessPool

from test import support
from test.support import hashlib_helper

from .executor import ExecutorTest, mul
from .util import (
    ProcessPoolForkMixin, ProcessPoolForkserverMixin, ProcessPoolSpawnMixin,
    create_executor_tests, setup_module,
    MulticoreMixin)  # multicore


class EventfulGCObj():
    def __init__(self, mgr):
        self.event = mgr.Event()

    def __del__(self):
        self.event.set()


class ProcessPoolExecutorTest(ExecutorTest):

    # multicore: test_max_workers_too_large (Windows) and test_killed_child
    # (a killed worker breaks ProcessPoolExecutor for good, and the test
    # asserts that submit() then raises; multicore fails that one future
    # with WorkerDiedError, a BrokenProcessPool, replaces the worker and
    # goes on) excluded.

    def test_map_chunksize(self):
        def bad_map():
            list(self.executor.map(pow, range(40), range(40), chunksize=-1))

        ref = list(map(pow, range(40), range(40)))
        self.assertEqual(
            list(self.executor.map(pow, range(40), range(40), chunksize=6)),
            ref)
        self.assertEqual(
            list(self.executor.map(pow, range(40), range(40), chunksize=50)),
            ref)
        self.assertEqual(
            list(self.executor.map(pow, range(40), range(40), chunksize=40)),
            ref)
        self.assertRaises(ValueError, bad_map)

    # multicore: test_traceback excluded: it asserts the exact private type
    # concurrent.futures.process._RemoteTraceback of the __cause__;
    # multicore's is multicore.exceptions.RemoteTraceback (multiprocessing's
    # public type), with the same .tb (tests/python/test_executor.py checks
    # the rest of it).

    @hashlib_helper.requires_hashdigest('md5')
    def test_ressources_gced_in_workers(self):
        # Ensure that argument for a job are correctly gc-ed after the job
        # is finished
        mgr = self.get_context().Manager()
        obj = EventfulGCObj(mgr)
        future = self.executor.submit(id, obj)
        future.result()

        self.assertTrue(obj.event.wait(timeout=1))

        # explicitly destroy the object to ensure that EventfulGCObj.__del__()
        # is called while manager is still running.
        support.gc_collect()
        obj = None
        support.gc_collect()

        mgr.shutdown()
        mgr.join()

    # multicore: test_saturation, test_idle_process_reuse_one and _multiple
    # excluded (ProcessPoolExecutor's private _processes, _max_workers);
    # test_max_tasks_per_child excluded: with a "fork" context it asserts the
    # ValueError ProcessPoolExecutor raises (forking from a threaded
    # process is unsafe), and multicore, whose single-threaded zygote forks
    # the replacements, supports max_tasks_per_child there; its other
    # branch reads _processes. _defaults_to_spawn_context excluded (the
    # private _mp_context: multicore only forks), test_max_tasks_early_shutdown
    # excluded (it skips itself under "fork", the only context multicore
    # has; tests/python/test_executor.py runs its body).
    # test_python_finalization_error excluded (it makes the creation of
    # ProcessPoolExecutor's second internal thread fail; multicore has one).

create_executor_tests(globals(), ProcessPoolExecutorTest,
                      executor_mixins=(MulticoreMixin,))  # multicore: was the three ProcessPool*Mixins


def setUpModule():
    setup_module()


if __name__ == "__main__":
    unittest.main()
