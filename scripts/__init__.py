"""Operational scripts: ``python -m scripts.cluster`` runs the production topology natively."""
