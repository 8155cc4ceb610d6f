"""The demos: the simulated ALOHA main job (``qwen-vla-ros demo``, demos/aloha.py) and the
VLN base (``qwen-vla-ros demo vln``, demos/vln.py), on shared plumbing (demos/common.py)."""
