"""An MLPerf Inference submission tree from raybench's LoadGen runs (`bench export mlperf`), and a
checker of such a tree by the submission checker's rules raybench can state (check.py)."""
