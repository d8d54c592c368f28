"""Optimization passes and configurations for training and inference speed."""
