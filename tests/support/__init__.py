"""What test modules share besides conftest's fixtures: helpers, constants and fixture plugins.

A test module never imports another test module (importing one re-collects its tests and, for
module-scoped fixtures, starts its servers again); what two modules share lives here, or in the
``bench`` package when the benchmarks use it too (the stack, polling, hostile inputs, stand-in
servers, photos).
"""
