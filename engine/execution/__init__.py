"""Running a plan: the executor's dispatcher and state machine, retries and circuit breakers,
watermark hand-over between extracts and loads, and the connections a run resolves.
"""
