"""The detectron2 commit this project installs (the optional extra: docs/detection.md).

On its own, with no import, so that every reader gets it without importing detectron2 or the
package that registers our modules in it: tools/install_detectron2.sh, docker/Dockerfile and
tests/test_docker_pins.py read the line below as text; transfer/fingerprint.py (the commit a
metrics.json records when pip kept none) and transfer/detectron2_side import it.
"""
DETECTRON2_COMMIT = "02b5c4e295e990042a714712c21dc79b731e8833"
