"""The command line: ``classifier predict``, ``download`` and ``export``, and the weights-layouts writer."""
