"""Faces: MTCNN detection, IoU tracking (a stable id per face) and per-engine crops."""

from stream.live.faces.crop import crop_faces, whole_frame
from stream.live.faces.detector import Detection, FaceDetector, DetectorConfig
from stream.live.faces.tracker import IoUTracker

__all__ = ["Detection", "DetectorConfig", "FaceDetector", "IoUTracker", "crop_faces", "whole_frame"]
