# Copied from CPython 3.13.0, Lib/test/test_concurrent_futures/test_init.py
# (the copy the 3.13.0 interpreter ships in lib/python3.13/test/).
# Copyright (c) 2001-2024 Python Software Foundation; All Rights Reserved.
# Licensed under the PSF License Agreement, version 2: LICENSE-PSF.txt here.
# Run against multicore.Executor: every change is marked "# multicore:" and
# listed, with why, in docs/executor.md ("Differences from
# concurrent.futures"). The assertions are CPython's.

import contextlib
import logging
import queue
import time
import unittest
import sys
import io
from concurrent.futures._base import BrokenExecutor
from concurrent.futures.process import _check_system_limits

from logging.handlers import QueueHandler

from test import support

from .util import ExecutorMixin, create_executor_tests, setup_module


INITIALIZER_STATUS = 'uninitialized'

def init(x):
    global INITIALIZER_STATUS
    INITIALIZER_STATUS = x

def get_init_status():
    return INITIALIZER_STATUS

def init_fail(log_queue=None):
    if log_queue is not None:
        logger = logging.getLogger('concurrent.futures')
        logger.addHandler(QueueHandler(log_queue))
        logger.setLevel('CRITICAL')
        logger.propagate = False
    time.sleep(0.1)  # let some futures be scheduled
    raise ValueError('error in initializer')


class InitializerMixin(ExecutorMixin):
    worker_count = 2

    def setUp(self):
        global INITIALIZER_STATUS
        INITIALIZER_STATUS = 'uninitialized'
        self.executor_kwargs = dict(initializer=init,
                                    initargs=('initialized',))
        super().setUp()

    def test_initializer(self):
        futures = [self.executor.submit(get_init_status)
                   for _ in range(self.worker_count)]

        for f in futures:
            self.assertEqual(f.result(), 'initialized')


# multicore: FailingInitializerMixin excluded: multicore starts the workers
# in the constructor, so a failing initializer raises WorkerInitError there
# (tests/python/test_executor.py), where ProcessPoolExecutor breaks later
# (BrokenExecutor from submit() and result(), its private _broken).


create_executor_tests(globals(), InitializerMixin)
# multicore: FailingInitializerResourcesTest excluded (multiprocessing's
# resource tracker, which multicore does not use).


def setUpModule():
    setup_module()


if __name__ == "__main__":
    unittest.main()
