"""Faces: MTCNN detection, IoU tracking (a stable id per face) and per-engine crops."""

from stream.faces.crop import crop_faces, whole_frame
from stream.faces.detector import Detection, FaceDetector, DetectorConfig
from stream.faces.tracker import IoUTracker

__all__ = ["Detection", "DetectorConfig", "FaceDetector", "IoUTracker", "crop_faces", "whole_frame"]
