"""The endpoint mode: a running OpenAI-compatible server under a schedule of requests sent by client
actors (point.py runs a grid point; arrivals.py makes the schedule; prompts.py the bodies; send.py
sends one schedule; peak.py is find_peak's probe rule; scrape.py the server's metrics; columns.py
the row and its rules). docs/endpoint.md says what each figure means."""
