"""dfstream: live deepfake detection. The subpackages follow the data's path:

sources (decode) -> faces (detect, track, crop) -> engines (score, in the top-level `engines` package)
-> scan / live pipeline -> cli.
"""

__version__ = "0.1.0"
