"""Baselines the method is compared with: Pix2Pix and SCFT (trained here) and ControlNet (zero-shot, when its weights exist)."""
