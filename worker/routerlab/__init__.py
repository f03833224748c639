"""Offline router work (numpy): training the learned scorer and evaluating routers the way RouteLLM
does. Never imported by a running worker."""
