"""The ITK-SNAP Distributed Segmentation Service as a source of work."""
