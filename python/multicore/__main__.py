"""python -m multicore demo: the original multicore example, timed.

Renders 100 items (each one sleeps 10 ms, standing in for real work)
sequentially, then in parallel split with ranges(), prints both times, the
speedup and the number of workers, and checks that both outputs are equal.
"""

import sys
import time

from multicore import Task, initialize, shutdown
from multicore.utils import ranges

# Defined before initialize(): the workers see them without being sent.
items = range(100)


def expensive_as_string(item):
    time.sleep(0.01)
    return str(item)


def multi_expensive_as_string(start, end):
    return ",".join([expensive_as_string(item) for item in items[start:end]])


USAGE = """usage: python -m multicore demo

  demo    render 100 items (10 ms each) sequentially and in parallel,
          and print both times, the speedup and the number of workers
"""


def demo():
    start = time.perf_counter()
    sequential = ",".join([expensive_as_string(item) for item in items])
    t_seq = time.perf_counter() - start

    initialize()
    try:
        import multicore

        workers = multicore.NUMBER_OF_WORKERS
        start = time.perf_counter()
        task = Task()
        if task is None:  # the pool is not running: sequential fallback
            parallel = multi_expensive_as_string(0, len(items))
        else:
            for begin, end in ranges(items):
                task.run(multi_expensive_as_string, begin, end)
            parallel = ",".join(task.get())
        t_par = time.perf_counter() - start
    finally:
        shutdown()

    print(f"sequential: {t_seq:.3f} s")
    print(f"parallel:   {t_par:.3f} s")
    print(f"speedup:    {t_seq / t_par:.2f}x")
    print(f"workers:    {workers}")
    if parallel != sequential:
        print("error: the parallel output differs from the sequential one",
              file=sys.stderr)
        return 1
    print("outputs match")
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["demo"]:
        return demo()
    sys.stdout.write(USAGE)
    return 2 if argv else 0


if __name__ == "__main__":
    sys.exit(main())
