"""Sending images to another instance's ``POST /predict``, for forwarding and for the CLI.

``client`` is the one client of ``/predict`` (one deadline for the whole exchange, a capped
read, the remote's refusals as this service's errors, ``Retry-After``); ``answers`` checks
what a remote answered against this service's own shapes and limits; ``policy`` decides which
addresses forwarding may connect to (SSRF); ``deadline`` cuts a connection whose time is up.
"""
