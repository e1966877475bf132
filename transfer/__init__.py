"""Turning a checkpoint into other frameworks' models.

``weights`` is the one strict reader every side uses; ``mmseg_side`` and ``detectron2_side``
import their framework and only they do."""
