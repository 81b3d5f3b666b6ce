"""The text a run reads: the UDHR, a hub corpus or local files, split into calibration and held-out parts."""
