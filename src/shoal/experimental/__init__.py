"""Experimental APIs, as in Ray: tqdm_ray (progress bars from tasks)."""
