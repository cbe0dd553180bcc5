"""Scoring models: metrics, statistics, the evaluation of the test protocols, and the report."""
