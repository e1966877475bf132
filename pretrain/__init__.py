"""VICRegL pretraining: backbones, heads, losses, matching, augmentation and the training engine.

Depends on torch and torchvision only (plus small pure-Python packages), so it runs on a GPU
box that has nothing else installed.
"""
