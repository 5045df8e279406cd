"""MLPerf LoadGen scenarios on the cluster: server, single_stream and multi_stream next to offline.

A scenario job travels the Offline path up to the workers (spec, data prepared once, worker actors
with their engines), then LoadGen, in the driver, decides when queries arrive and whether the run is
VALID:

    settings.py   the job's `loadgen:` section, its checks, LoadGen's TestSettings made from it
    workers.py    the worker actors (or the in-process worker) as futures of sample batches
    bridge.py     the SUT: LoadGen's queries -> batches on idle workers -> QuerySamplesComplete
    runner.py     one LoadGen test (SUT, QSL, logs), and find_peak's search over tests
    summary.py    LoadGen's mlperf_log_summary.txt and trace, parsed (pure)
    columns.py    LoadGen's figures -> the row's scenario columns and verdict (pure, the one place)
    meter.py      live metrics: queries issued/completed, queue depth per worker, query latency
    point.py      one grid point from spec to stored row (driver.py hands non-offline points here)

`mlperf_loadgen` is imported only inside the functions that call it, so `bench --help` and
Offline runs never load it.
"""
