# CPython 3.13.0's test_concurrent_futures package (Lib/test/
# test_concurrent_futures/), run by pytest against multicore.Executor.
# Copyright (c) 2001-2024 Python Software Foundation; All Rights Reserved.
# Licensed under the PSF License Agreement, version 2: LICENSE-PSF.txt here.
#
# multicore: CPython's __init__.py (load_tests for regrtest, and a skip of
# the whole package on an ASan/MSan build of CPython itself) is not used:
# pytest collects the modules directly, and the interpreter here is not an
# ASan build. Left out: test_thread_pool.py (ThreadPoolExecutor's own) and
# test_future.py (tests the Future class, which multicore reuses). Every
# difference is listed in docs/executor.md.
