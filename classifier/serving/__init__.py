"""A prediction from request to answer: bodies and options, the classifier, the relay to a remote, the catalog of model states and the pool of loaded models."""
