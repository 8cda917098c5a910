"""Reproducible, side-by-side benchmarks of arrowline against its peers.

    python -m benchmarks list
    python -m benchmarks run orchestration stream_memory --repeat 5

Each measurement runs in a fresh subprocess; contenders are interleaved (A B C A B C), one
warm-up round is discarded, and the report gives medians with min and max, CPU time and peak RSS.
"""
