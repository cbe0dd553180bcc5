"""Baselines the method is compared with.

Pix2Pix and SCFT are trained here; ControlNet runs zero-shot, only where its weights exist.
How each differs from its paper and reference code: docs/deviations.md.
"""
