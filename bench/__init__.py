"""Benchmarks, and what they share with the tests (stack, polling, hostile inputs, stand-in
servers, photos).

A package, so the benchmarks and the tests import these modules without editing
``sys.path``: run a benchmark from the project root as a module, ``python3 -m bench.serving``
(the root is then on ``sys.path``, so ``classifier`` and ``app`` are this checkout's).
"""
