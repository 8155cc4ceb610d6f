"""Learning from demonstrations: bags -> samples (dataset.py, no ROS) -> a fine-tuned
checkpoint (train.py, torch). Collecting and evaluating run the ROS stack (collect.py, ...)."""
